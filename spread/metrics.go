package spread

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the spread VIPs' series. A nil *Metrics records nothing.
type Metrics struct {
	refusedTotal *prometheus.CounterVec // by reason
	held         *prometheus.GaugeVec   // by vip: 1 while this node holds it
	heldSince    *prometheus.GaugeVec   // by vip: unix seconds this node started holding it
	moves        *prometheus.CounterVec // by vip, reason: assignments this node made as leader
	entries      *prometheus.CounterVec // by kind: Raft entries the granter loop committed
}

// Reasons a lease message is refused.
const (
	reasonMalformed  = "malformed"  // not a valid frame
	reasonUnexpected = "unexpected" // a valid frame a holder never sends
	reasonOverloaded = "overloaded" // the granter's queue was full
)

// NewMetrics registers the series with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		refusedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_lease_messages_refused_total",
			Help: "Lease protocol messages refused on the Raft port, by reason (malformed, unexpected, overloaded).",
		}, []string{"reason"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_spread_vip_held",
			Help: "1 while this node holds the spread VIP (under a lease, or as the leader it is settled on).",
		}, []string{"vip"}),
		heldSince: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_spread_vip_held_since_seconds",
			Help: "Unix time at which this node started holding the spread VIP; 0 while it does not.",
		}, []string{"vip"}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_spread_vip_moves_total",
			Help: "Assignments of a spread VIP to a new node made by this node as leader, by reason (new, unfit, gone, rebalance, operator, removed).",
		}, []string{"vip", "reason"}),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_spread_raft_entries_total",
			Help: "Raft entries this node's granter loop committed as leader, by kind (assign, settle, forget, round); each answers the lease requests waiting for it.",
		}, []string{"kind"}),
	}
	for _, r := range []string{reasonMalformed, reasonUnexpected, reasonOverloaded} {
		m.refusedTotal.WithLabelValues(r)
	}
	for _, k := range []string{entryAssign, entrySettle, entryForget, entryRound} {
		m.entries.WithLabelValues(k)
	}
	for _, c := range []prometheus.Collector{m.refusedTotal, m.held, m.heldSince, m.moves, m.entries} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) refused(reason string) {
	if m != nil {
		m.refusedTotal.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) holding(vip string, held bool, now time.Time) {
	if m == nil {
		return
	}
	if held {
		m.held.WithLabelValues(vip).Set(1)
		m.heldSince.WithLabelValues(vip).Set(float64(now.UnixNano()) / 1e9)
		return
	}
	m.held.WithLabelValues(vip).Set(0)
	m.heldSince.WithLabelValues(vip).Set(0)
}

func (m *Metrics) moved(vip, reason string) {
	if m != nil {
		m.moves.WithLabelValues(vip, reason).Inc()
	}
}

func (m *Metrics) committed(kind string) {
	if m != nil {
		m.entries.WithLabelValues(kind).Inc()
	}
}
