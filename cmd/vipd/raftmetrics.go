package main

import (
	"fmt"
	"slices"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// raftSink receives hashicorp/raft's own measurements, which it reports
// through go-metrics' process-wide global, and keeps the two that show how
// close a leader is to losing its lease: how long ago each follower last
// answered, at every lease check, and each heartbeat's round trip.
type raftSink struct {
	contactAge prometheus.Histogram
	heartbeat  *prometheus.HistogramVec
}

// Keys raft reports them under (go-metrics joins them with dots).
var (
	raftContactKey   = []string{"raft", "leader", "lastContact"}
	raftHeartbeatKey = []string{"raft", "replication", "heartbeat"}
)

// installRaftMetrics registers the histograms on reg and makes the sink
// go-metrics' global, which raft reports to. Once per process.
func installRaftMetrics(reg prometheus.Registerer) error {
	s := &raftSink{
		contactAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vipd_raft_leader_contact_age_seconds",
			Help:    "On the leader, at each lease check: how long ago each voter last answered. The leader steps down when a quorum is older than the lease.",
			Buckets: runtimeLatencyBounds,
		}),
		heartbeat: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vipd_raft_heartbeat_seconds",
			Help:    "On the leader: round trip of each Raft heartbeat, per peer.",
			Buckets: runtimeLatencyBounds,
		}, []string{"peer"}),
	}
	for _, c := range []prometheus.Collector{s.contactAge, s.heartbeat} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register raft metrics: %w", err)
		}
	}
	_, err := gometrics.NewGlobal(&gometrics.Config{
		TimerGranularity: time.Millisecond,
		AllowedPrefixes:  []string{"raft.leader.lastContact", "raft.replication.heartbeat"},
		FilterDefault:    false,
	}, s)
	if err != nil {
		return fmt.Errorf("raft metrics sink: %w", err)
	}
	return nil
}

var _ gometrics.MetricSink = (*raftSink)(nil)

// Raft times in milliseconds (TimerGranularity).
func (s *raftSink) AddSample(key []string, ms float32) {
	if slices.Equal(key, raftContactKey) {
		s.contactAge.Observe(float64(ms) / 1e3)
	}
}

func (s *raftSink) AddSampleWithLabels(key []string, ms float32, labels []gometrics.Label) {
	if !slices.Equal(key, raftHeartbeatKey) {
		s.AddSample(key, ms)
		return
	}
	for _, l := range labels {
		if l.Name == "peer_id" {
			s.heartbeat.WithLabelValues(l.Value).Observe(float64(ms) / 1e3)
		}
	}
}

// The other kinds carry nothing vipd exports.
func (*raftSink) SetGauge([]string, float32)                                 {}
func (*raftSink) SetGaugeWithLabels([]string, float32, []gometrics.Label)    {}
func (*raftSink) EmitKey([]string, float32)                                  {}
func (*raftSink) IncrCounter([]string, float32)                              {}
func (*raftSink) IncrCounterWithLabels([]string, float32, []gometrics.Label) {}
