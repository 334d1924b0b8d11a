// Package bench measures vipd side by side with HAProxy and a direct
// connection: the same client and the same backend, interleaved in one run,
// so that the figures differ only by what sits in the middle.
package bench

import (
	"math"
	"slices"
	"time"
)

// Median returns the median of xs (the mean of the two middle values for an
// even count) and NaN for an empty slice. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest sample such that at least p percent of
// the samples are less than or equal to it. It returns 0 for no samples.
// Nearest-rank never interpolates, so p99 is always a latency that was seen.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}
