package bench

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

func sampleRows() []Row {
	bulk := Row{Name: "bulk 1 stream (MB/s)", Higher: true, Target: 1.1}
	for _, v := range []float64{900, 1000, 1100} {
		bulk.Add("direct", v*3)
		bulk.Add("haproxy", v)
		bulk.Add("vipd", v*1.25)
	}
	p99 := Row{Name: "  pair p99 (µs)", Target: 1.0}
	for _, v := range []float64{100, 200, math.NaN()} {
		p99.Add("haproxy", v)
		p99.Add("vipd", v*2)
	}
	return []Row{bulk, p99}
}

func TestRenderTableShowsMediansRatioAndVerdict(t *testing.T) {
	var b strings.Builder
	if err := RenderTable(&b, []string{"direct", "haproxy", "vipd"}, sampleRows()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header, separator and 2 rows, got %d lines", len(lines))
	}
	width := utf8.RuneCountInString(lines[0])
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n != width {
			t.Errorf("line %d is %d wide, header %d: %q", i, n, width, l)
		}
		if !strings.HasPrefix(l, "| ") || !strings.HasSuffix(l, " |") {
			t.Errorf("line %d is not a Markdown table row: %q", i, l)
		}
	}
	for _, col := range []string{"metric", "direct", "haproxy", "vipd", "vipd/haproxy", "target"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header lacks %q: %q", col, lines[0])
		}
	}
	bulk := cells(lines[2])
	want := []string{"bulk 1 stream (MB/s)", "3000", "1000", "1250", "1.25", ">= 1.10 met"}
	if strings.Join(bulk, "|") != strings.Join(want, "|") {
		t.Errorf("bulk row = %q, want %q", bulk, want)
	}
	// The NaN run is left out of the medians: haproxy 150, vipd 300, direct none.
	p99 := cells(lines[3])
	want = []string{"pair p99 (µs)", "-", "150", "300", "2.00", "<= 1.00 MISSED"}
	if strings.Join(p99, "|") != strings.Join(want, "|") {
		t.Errorf("p99 row = %q, want %q", p99, want)
	}
}

func TestRenderTableAddsARatioColumnPerExtraVipdBuild(t *testing.T) {
	rows := sampleRows()
	for _, v := range []float64{500, 500, 500} {
		rows[0].Add("vipd-buf", v)
	}
	var b strings.Builder
	if err := RenderTable(&b, []string{"haproxy", "vipd", "vipd-buf"}, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	header := cells(lines[0])
	want := []string{"metric", "haproxy", "vipd", "vipd-buf", "vipd/haproxy", "vipd-buf/haproxy", "target"}
	if strings.Join(header, "|") != strings.Join(want, "|") {
		t.Fatalf("header = %q, want %q", header, want)
	}
	bulk := cells(lines[2])
	if bulk[4] != "1.25" || bulk[5] != "0.50" || bulk[6] != ">= 1.10 met" {
		t.Errorf("bulk row = %q, want vipd 1.25, vipd-buf 0.50, verdict on vipd", bulk)
	}
}

func cells(line string) []string {
	parts := strings.Split(strings.Trim(line, "|"), "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

func TestRatioAndVerdictNeedBothProxies(t *testing.T) {
	r := Row{Name: "x", Higher: true, Target: 1}
	r.Add("vipd", 5)
	if !math.IsNaN(r.Ratio("vipd")) || r.Verdict() != "" {
		t.Errorf("without haproxy: ratio %v verdict %q, want NaN and empty", r.Ratio("vipd"), r.Verdict())
	}
	r.Add("haproxy", 0)
	if !math.IsNaN(r.Ratio("vipd")) {
		t.Errorf("haproxy at 0: ratio %v, want NaN", r.Ratio("vipd"))
	}
	noTarget := Row{Name: "y"}
	noTarget.Add("vipd", 1)
	noTarget.Add("haproxy", 2)
	if noTarget.Ratio("vipd") != 0.5 || noTarget.Verdict() != "" {
		t.Errorf("no target: ratio %v verdict %q, want 0.5 and empty", noTarget.Ratio("vipd"), noTarget.Verdict())
	}
}

func TestFormatValueKeepsAboutThreeDigits(t *testing.T) {
	cases := map[float64]string{
		12345.6:    "12346",
		123.4:      "123",
		45.67:      "45.7",
		3.14159:    "3.14",
		0:          "0.00",
		math.NaN(): "-",
	}
	for in, want := range cases {
		if got := FormatValue(in); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestRenderRoundsListsEveryRunInOrder(t *testing.T) {
	var b strings.Builder
	if err := RenderRounds(&b, []string{"haproxy", "vipd"}, sampleRows()); err != nil {
		t.Fatal(err)
	}
	want := "bulk 1 stream (MB/s):  haproxy [900 1000 1100]  vipd [1125 1250 1375]\n" +
		"pair p99 (µs):  haproxy [100 200 -]  vipd [200 400 -]\n"
	if b.String() != want {
		t.Errorf("RenderRounds =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestVerdictJudgesTheRatioAsPrinted(t *testing.T) {
	cases := []struct {
		vipd, haproxy float64
		higher        bool
		want          string
	}{
		{2.0002, 2, false, "<= 1.00 met"},  // prints 1.00
		{2.02, 2, false, "<= 1.00 MISSED"}, // prints 1.01
		{1.0996, 1, true, ">= 1.10 met"},   // prints 1.10
		{1.094, 1, true, ">= 1.10 MISSED"}, // prints 1.09
	}
	for _, c := range cases {
		r := Row{Name: "x", Higher: c.higher, Target: map[bool]float64{false: 1, true: 1.1}[c.higher]}
		r.Add("vipd", c.vipd)
		r.Add("haproxy", c.haproxy)
		if got := r.Verdict(); got != c.want {
			t.Errorf("vipd %v, haproxy %v: verdict %q, want %q", c.vipd, c.haproxy, got, c.want)
		}
	}
}
