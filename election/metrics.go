package election

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus series, prefix vipd_election_.
type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector

	isLeader          prometheus.Gauge
	changes           prometheus.Counter
	handshakeFailures *prometheus.CounterVec // raft TLS, by reason
}

// newMetrics registers the series on reg (nil: create, do not register).
// The func gauges read live values through the given callbacks.
func newMetrics(reg prometheus.Registerer, term, lastContact, membersAlive func() float64) (*metrics, error) {
	m := &metrics{
		reg: reg,
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
	}
	for _, r := range handshakeReasons {
		m.handshakeFailures.WithLabelValues(r) // exported at 0 before the first failure
	}
	m.collectors = []prometheus.Collector{
		m.isLeader, m.changes, m.handshakeFailures,
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
	if reg == nil {
		return m, nil
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register election metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) leadership(leader bool) {
	m.changes.Inc()
	if leader {
		m.isLeader.Set(1)
	} else {
		m.isLeader.Set(0)
	}
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
