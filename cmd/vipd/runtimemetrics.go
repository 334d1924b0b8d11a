package main

import (
	"math"
	"runtime/metrics"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// runtimeLatencyBounds are the upper bounds of the runtime histograms, in
// seconds: fine around the Raft timings (a lan lease is 70 ms), where the Go
// collector's powers of ten cannot tell 11 ms from 100 ms.
var runtimeLatencyBounds = []float64{
	50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 20e-3, 35e-3, 50e-3, 70e-3, 100e-3, 150e-3, 250e-3, 500e-3, 1,
}

// runtimeCollector exposes two of the Go runtime's own histograms, which
// say whether the process delays its goroutines: how long runnable
// goroutines waited for a thread (/sched/latencies), and how long the GC
// stopped the world (/sched/pauses/total/gc).
type runtimeCollector struct {
	mu      sync.Mutex // guards samples: Collect may run concurrently
	samples []metrics.Sample
	descs   []*prometheus.Desc
}

func newRuntimeCollector() *runtimeCollector {
	return &runtimeCollector{
		samples: []metrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/sched/pauses/total/gc:seconds"}},
		descs: []*prometheus.Desc{
			prometheus.NewDesc("vipd_runtime_sched_latency_seconds", "Time goroutines spent runnable before running (Go runtime /sched/latencies), since start.", nil, nil),
			prometheus.NewDesc("vipd_runtime_gc_pause_seconds", "Stop-the-world pauses of the garbage collector (Go runtime /sched/pauses/total/gc), since start.", nil, nil),
		},
	}
}

func (c *runtimeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *runtimeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	metrics.Read(c.samples)
	for i, s := range c.samples {
		if s.Value.Kind() != metrics.KindFloat64Histogram {
			continue // a runtime without this metric
		}
		count, sum, buckets := rebucket(s.Value.Float64Histogram(), runtimeLatencyBounds)
		ch <- prometheus.MustNewConstHistogram(c.descs[i], count, sum, buckets)
	}
}

// rebucket turns a runtime histogram (counts between boundaries) into
// cumulative counts at bounds. A runtime bucket counts under the first
// bound at or above its upper edge, so every figure is an upper estimate.
// The sum is estimated from the buckets' lower edges, since the runtime
// keeps none.
func rebucket(h *metrics.Float64Histogram, bounds []float64) (uint64, float64, map[float64]uint64) {
	out := make(map[float64]uint64, len(bounds))
	var count uint64
	var sum float64
	j := 0
	for i, n := range h.Counts {
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		for j < len(bounds) && bounds[j] < hi {
			out[bounds[j]] = count
			j++
		}
		count += n
		if !math.IsInf(lo, -1) {
			sum += float64(n) * lo
		}
	}
	for ; j < len(bounds); j++ {
		out[bounds[j]] = count
	}
	return count, sum, out
}
