package election

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus series, prefix vipd_election_.
type metrics struct {
	collectors []prometheus.Collector

	isLeader          prometheus.Gauge
	changes           prometheus.Counter
	handshakeFailures *prometheus.CounterVec // raft TLS, by reason
	reconnects        prometheus.Counter     // members believed dead that answered a redial
	forgotten         prometheus.Counter     // members dead past the reconnect timeout
}

// newMetrics creates the series; register puts them on a registry. The
// func gauges read live values through the given callbacks.
func newMetrics(term, lastContact, membersAlive func() float64) *metrics {
	m := &metrics{
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vipd_election_is_leader", Help: "1 while this node is the confirmed leader that holds the VIPs; 0 on a witness or a node in maintenance even while it holds Raft leadership, which it hands over.",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vipd_election_leadership_changes_total", Help: "Leadership gains and losses reported by this node.",
		}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_raft_handshake_failures_total",
			Help: "Raft TLS handshakes that failed on this node, accepted or dialled, by reason.",
		}, []string{"reason"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vipd_election_gossip_reconnects_total", Help: "Members gossip believed dead that answered a redial: healed partitions.",
		}),
		forgotten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vipd_election_gossip_members_forgotten_total", Help: "Members forgotten after being dead longer than the reconnect timeout; they stay in the Raft configuration.",
		}),
	}
	for _, r := range handshakeReasons {
		m.handshakeFailures.WithLabelValues(r) // exported at 0 before the first failure
	}
	m.collectors = []prometheus.Collector{
		m.isLeader, m.changes, m.handshakeFailures, m.reconnects, m.forgotten,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "vipd_election_term", Help: "Current Raft term.",
		}, term),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "vipd_election_last_contact_seconds",
			Help: "Seconds since a follower last heard from the leader (0 on the leader; since start if never).",
		}, lastContact),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "vipd_election_members_alive", Help: "Cluster members that gossip reports alive, this node included.",
		}, membersAlive),
	}
	return m
}

// register puts every series on reg, or none of them, and returns their
// removal. A nil reg registers nothing.
func (m *metrics) register(reg prometheus.Registerer) (unregister func(), err error) {
	if reg == nil {
		return func() {}, nil
	}
	remove := func(cs []prometheus.Collector) {
		for _, c := range cs {
			reg.Unregister(c)
		}
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			remove(m.collectors[:i])
			return nil, fmt.Errorf("register election metrics: %w", err)
		}
	}
	return func() { remove(m.collectors) }, nil
}

func (m *metrics) leadership(leader bool) {
	m.changes.Inc()
	if leader {
		m.isLeader.Set(1)
	} else {
		m.isLeader.Set(0)
	}
}
