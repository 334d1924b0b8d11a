package vip

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the vipd_vip_* series. They exist even when not registered, so
// the code never checks for nil.
type metrics struct {
	held            *prometheus.GaugeVec
	claims          *prometheus.CounterVec
	releases        *prometheus.CounterVec
	restores        *prometheus.CounterVec
	renewFailures   *prometheus.CounterVec
	announcements   *prometheus.CounterVec
	conflicts       *prometheus.CounterVec
	claimToAnnounce prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	labels := []string{"address", "interface"}
	m := &metrics{
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_vip_held", Help: "1 while this node holds the VIP, else 0.",
		}, labels),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_vip_claims_total", Help: "VIP claims (address added at the start of a Hold).",
		}, labels),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_vip_releases_total", Help: "VIP releases (address deleted at the end of a Hold).",
		}, labels),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_vip_restores_total", Help: "VIP addresses put back while held, after they vanished or their link came back up.",
		}, labels),
		renewFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_vip_renewal_failures_total", Help: "Lifetime renewals or restores of a held VIP address that failed.",
		}, labels),
		announcements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_vip_announcements_total", Help: "Gratuitous ARP (request and reply) or unsolicited NA announcements sent.",
		}, labels),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_vip_conflicts_total", Help: "ARP/NA packets from another MAC claiming a VIP this node holds.",
		}, labels),
		claimToAnnounce: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vipd_vip_claim_to_announce_seconds",
			Help:    "Time from the start of a Hold to the first announcement of a VIP.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12), // 100µs .. ~2.4s
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.held, m.claims, m.releases, m.restores, m.renewFailures, m.announcements, m.conflicts, m.claimToAnnounce} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register vip metrics: %w", err)
		}
	}
	return m, nil
}

// initSeries creates every series of one VIP at zero, so that each is
// exported from the start and a rate over it has a beginning.
func (m *metrics) initSeries(address, ifname string) {
	m.held.WithLabelValues(address, ifname).Set(0)
	for _, c := range m.counters() {
		c.WithLabelValues(address, ifname)
	}
}

// deleteSeries drops every series of one VIP, once it left the set.
func (m *metrics) deleteSeries(address, ifname string) {
	m.held.DeleteLabelValues(address, ifname)
	for _, c := range m.counters() {
		c.DeleteLabelValues(address, ifname)
	}
}

// counters are the labelled counters: every one has a series per VIP.
func (m *metrics) counters() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{m.claims, m.releases, m.restores, m.renewFailures, m.announcements, m.conflicts}
}
