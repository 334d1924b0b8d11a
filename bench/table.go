package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// Row is one line of the result table: the values one figure took, per
// target, in run order (NaN for a run that failed or does not apply).
type Row struct {
	Name   string
	Higher bool    // higher is better (throughput); false for latency and memory
	Target float64 // the vipd/haproxy ratio aimed for; 0 means none
	Values map[string][]float64
}

// Add records one value of the row for target.
func (r *Row) Add(target string, v float64) {
	if r.Values == nil {
		r.Values = make(map[string][]float64)
	}
	r.Values[target] = append(r.Values[target], v)
}

// Median is the median of the row's valid (non-NaN) values for target, NaN
// when there are none.
func (r *Row) Median(target string) float64 {
	return Median(valid(r.Values[target]))
}

// Ratio is the median of target over the median of haproxy, NaN when
// either is missing or haproxy's is zero.
func (r *Row) Ratio(target string) float64 {
	v, h := r.Median(target), r.Median("haproxy")
	if math.IsNaN(v) || math.IsNaN(h) || h == 0 {
		return math.NaN()
	}
	return v / h
}

// Verdict compares vipd/haproxy, as the table prints it (two decimals),
// with the row's target: "" when the row has no target or no ratio, else
// the target and "met" or "MISSED". Judging the printed ratio keeps a
// verdict from contradicting its own row: vipd's two descriptors of its
// own, shared by every connection, make 2.0002 fds per connection, a
// printed 1.00 against a target of 1.00.
func (r *Row) Verdict() string {
	ratio := r.Ratio("vipd")
	if r.Target == 0 || math.IsNaN(ratio) {
		return ""
	}
	ratio = math.Round(ratio*100) / 100
	op, met := ">=", ratio >= r.Target
	if !r.Higher {
		op, met = "<=", ratio <= r.Target
	}
	word := "met"
	if !met {
		word = "MISSED"
	}
	return fmt.Sprintf("%s %.2f %s", op, r.Target, word)
}

func valid(xs []float64) []float64 {
	out := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			out = append(out, x)
		}
	}
	return out
}

// FormatValue prints a figure with about three significant digits, and "-"
// for NaN.
func FormatValue(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "-"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// RenderTable writes the medians as a Markdown table: one column per
// target, then each vipd build's ratio to haproxy (vipd/haproxy first), and
// the verdict on vipd/haproxy.
func RenderTable(w io.Writer, targets []string, rows []Row) error {
	var compared []string // targets shown as a ratio to haproxy
	if slices.Contains(targets, "haproxy") {
		for _, t := range targets {
			if t != "direct" && t != "haproxy" {
				compared = append(compared, t)
			}
		}
	}
	if len(compared) == 0 {
		compared = []string{"vipd"} // the column stays, empty
	}
	header := append([]string{"metric"}, targets...)
	for _, t := range compared {
		header = append(header, t+"/haproxy")
	}
	header = append(header, "target")
	cells := [][]string{header}
	for i := range rows {
		r := &rows[i]
		line := []string{r.Name}
		for _, t := range targets {
			line = append(line, FormatValue(r.Median(t)))
		}
		for _, t := range compared {
			ratio := "-"
			if x := r.Ratio(t); !math.IsNaN(x) {
				ratio = fmt.Sprintf("%.2f", x)
			}
			line = append(line, ratio)
		}
		line = append(line, r.Verdict())
		cells = append(cells, line)
	}
	widths := make([]int, len(header))
	for _, line := range cells {
		for j, c := range line {
			widths[j] = max(widths[j], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for i, line := range cells {
		writeLine(&b, line, widths)
		if i == 0 {
			sep := make([]string, len(widths))
			for j, wd := range widths {
				sep[j] = strings.Repeat("-", wd)
			}
			writeLine(&b, sep, widths)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeLine writes one table line; the metric column is left-aligned, the
// figures right-aligned.
func writeLine(b *strings.Builder, line []string, widths []int) {
	b.WriteString("|")
	for j, c := range line {
		pad := strings.Repeat(" ", widths[j]-utf8.RuneCountInString(c))
		if j == 0 || j == len(line)-1 {
			fmt.Fprintf(b, " %s%s |", c, pad)
		} else {
			fmt.Fprintf(b, " %s%s |", pad, c)
		}
	}
	b.WriteString("\n")
}

// RenderRounds writes every run's value, so the spread behind each median
// can be judged.
func RenderRounds(w io.Writer, targets []string, rows []Row) error {
	var b strings.Builder
	for i := range rows {
		r := &rows[i]
		fmt.Fprintf(&b, "%s:", strings.TrimSpace(r.Name))
		for _, t := range targets {
			vals := make([]string, len(r.Values[t]))
			for k, v := range r.Values[t] {
				vals[k] = FormatValue(v)
			}
			fmt.Fprintf(&b, "  %s [%s]", t, strings.Join(vals, " "))
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
