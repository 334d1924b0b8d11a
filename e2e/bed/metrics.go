package bed

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Metrics is one scrape of a node's GET /metrics: each series, written as
// in the exposition text (name{labels}), and its value.
type Metrics map[string]float64

// Metrics scrapes node's admin API from inside node's namespace.
func (c *Cluster) Metrics(ctx context.Context, node string) (Metrics, error) {
	h := c.Bed.Host(node)
	body, err := h.Get(ctx, netip.AddrPortFrom(h.Addr, AdminPort).String(), "/metrics")
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", node, err)
	}
	return ParseMetrics(body)
}

// ParseMetrics reads the Prometheus text format: comments are skipped, every
// other line is a series and its value.
func ParseMetrics(text string) (Metrics, error) {
	m := Metrics{}
	for i, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		cut := strings.LastIndexByte(line, ' ')
		if cut < 0 {
			return nil, fmt.Errorf("metrics line %d: %q: no value", i+1, line)
		}
		v, err := strconv.ParseFloat(line[cut+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %q: %w", i+1, line, err)
		}
		m[line[:cut]] = v
	}
	return m, nil
}

// Bucket is one upper bound of a histogram and how many observations in a
// time span were at most that.
type Bucket struct {
	Le    float64
	Count float64
}

// Histogram returns the cumulative buckets of the series of histogram name
// with the given labels (`peer="n2"`; "" for none but le) observed between
// earlier and m, in order of le.
func (m Metrics) Histogram(name, labels string, earlier Metrics) []Bucket {
	if labels != "" {
		labels += ","
	}
	prefix := name + "_bucket{" + labels + `le="`
	var out []Bucket
	for k, v := range m {
		le, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		bound, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64)
		if err != nil {
			continue
		}
		out = append(out, Bucket{Le: bound, Count: v - earlier[k]})
	}
	slices.SortFunc(out, func(a, b Bucket) int {
		switch {
		case a.Le < b.Le:
			return -1
		case a.Le > b.Le:
			return 1
		}
		return 0
	})
	return out
}

// Quantile returns the upper bound of the bucket that holds quantile q of
// the observations (an upper estimate, as precise as the buckets), and the
// number of observations. It is 0 when there were none.
func Quantile(buckets []Bucket, q float64) (time.Duration, float64) {
	if len(buckets) == 0 {
		return 0, 0
	}
	total := buckets[len(buckets)-1].Count
	if total == 0 {
		return 0, 0
	}
	for _, b := range buckets {
		if b.Count >= q*total {
			if math.IsInf(b.Le, 1) {
				return time.Duration(math.MaxInt64), total
			}
			return time.Duration(b.Le * float64(time.Second)), total
		}
	}
	return 0, total
}

// Above returns how many observations were larger than bound, counting
// from the largest bucket bound at or below it (so it never undercounts).
func Above(buckets []Bucket, bound time.Duration) float64 {
	if len(buckets) == 0 {
		return 0
	}
	total, below := buckets[len(buckets)-1].Count, 0.0
	for _, b := range buckets {
		if time.Duration(b.Le*float64(time.Second)) > bound {
			break
		}
		below = b.Count
	}
	return total - below
}

// Largest returns the upper bound of the highest bucket that received any
// observation: the worst case, as precise as the buckets.
func Largest(buckets []Bucket) time.Duration {
	prev := 0.0
	var worst time.Duration
	for _, b := range buckets {
		if b.Count > prev {
			if math.IsInf(b.Le, 1) {
				return time.Duration(math.MaxInt64)
			}
			worst = time.Duration(b.Le * float64(time.Second))
		}
		prev = b.Count
	}
	return worst
}
