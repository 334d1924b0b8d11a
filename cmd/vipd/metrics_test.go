package main

import (
	"math"
	"runtime/metrics"
	"testing"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// A runtime bucket counts under the first bound at or above its upper
// edge: never under a smaller bound than its values may have.
func TestRebucketCountsEachRuntimeBucketUnderTheFirstBoundAboveIt(t *testing.T) {
	h := &metrics.Float64Histogram{
		Buckets: []float64{math.Inf(-1), 0, 0.5e-3, 1e-3, 3e-3, 80e-3, math.Inf(1)},
		Counts:  []uint64{0, 4, 3, 2, 1, 5},
	}
	count, sum, got := rebucket(h, []float64{1e-3, 2.5e-3, 5e-3, 70e-3, 100e-3})
	want := map[float64]uint64{1e-3: 7, 2.5e-3: 7, 5e-3: 9, 70e-3: 9, 100e-3: 10}
	for b, n := range want {
		if got[b] != n {
			t.Errorf("bucket le=%g: %d, want %d (all: %v)", b, got[b], n, got)
		}
	}
	if count != 15 {
		t.Errorf("count %d, want 15", count)
	}
	if wantSum := 3*0.5e-3 + 2*1e-3 + 3e-3 + 5*80e-3; math.Abs(sum-wantSum) > 1e-9 {
		t.Errorf("sum %g, want %g (lower edges)", sum, wantSum)
	}
}

func TestRuntimeCollectorExposesSchedulerLatencyAndGCPauses(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newRuntimeCollector())
	time.Sleep(time.Millisecond) // let the runtime schedule something
	fams := gather(t, reg)
	for _, name := range []string{"vipd_runtime_sched_latency_seconds", "vipd_runtime_gc_pause_seconds"} {
		f, ok := fams[name]
		if !ok || f.GetType() != dto.MetricType_HISTOGRAM {
			t.Fatalf("%s missing or not a histogram: %v", name, f)
		}
		if n := len(f.Metric[0].Histogram.Bucket); n != len(runtimeLatencyBounds) {
			t.Errorf("%s: %d buckets, want %d", name, n, len(runtimeLatencyBounds))
		}
	}
	if n := fams["vipd_runtime_sched_latency_seconds"].Metric[0].Histogram.GetSampleCount(); n == 0 {
		t.Error("scheduler latency histogram is empty: not read from the runtime")
	}
}

// raft reports through go-metrics: the sink keeps the leader's contact ages
// and the heartbeats per peer, in seconds, and nothing else.
func TestRaftSinkKeepsContactAgesAndHeartbeatsPerPeer(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := installRaftMetrics(reg); err != nil {
		t.Fatal(err)
	}
	m := gometrics.Default() // what raft reports to
	m.AddSample([]string{"raft", "leader", "lastContact"}, 60)
	m.AddSample([]string{"raft", "leader", "lastContact"}, 3)
	m.AddSampleWithLabels([]string{"raft", "replication", "heartbeat"}, 12, []gometrics.Label{{Name: "peer_id", Value: "n2"}})
	m.AddSample([]string{"raft", "replication", "heartbeat", "n2"}, 500) // raft's legacy duplicate
	m.AddSample([]string{"raft", "rpc", "appendEntries"}, 500)

	fams := gather(t, reg)
	age := fams["vipd_raft_leader_contact_age_seconds"].Metric[0].Histogram
	if age.GetSampleCount() != 2 || math.Abs(age.GetSampleSum()-0.063) > 1e-6 {
		t.Errorf("contact age: %d samples, sum %g s; want 2 and 0.063", age.GetSampleCount(), age.GetSampleSum())
	}
	hb := fams["vipd_raft_heartbeat_seconds"]
	if hb == nil || len(hb.Metric) != 1 {
		t.Fatalf("heartbeat: %v, want one series", hb)
	}
	if l := hb.Metric[0].Label; len(l) != 1 || l[0].GetName() != "peer" || l[0].GetValue() != "n2" {
		t.Errorf("heartbeat labels %v, want peer=n2", l)
	}
	if h := hb.Metric[0].Histogram; h.GetSampleCount() != 1 || math.Abs(h.GetSampleSum()-0.012) > 1e-6 {
		t.Errorf("heartbeat: %d samples, sum %g s; want 1 and 0.012", h.GetSampleCount(), h.GetSampleSum())
	}
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}
