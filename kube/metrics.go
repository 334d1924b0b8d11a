package kube

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the address pools' and Services' gauges.
type metrics struct {
	addresses *prometheus.GaugeVec
	services  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		addresses: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_kubernetes_pool_addresses",
			Help: "Addresses of each Kubernetes address pool, by state: used (held by a Service) or free.",
		}, []string{"pool", "state"}),
		services: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_kubernetes_services",
			Help: "Services of type LoadBalancer that vipd serves, by state: allocated (with an address) or pending (none could be given, or the leader has not written it yet).",
		}, []string{"state"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.addresses, m.services} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("kubernetes metrics: %w", err)
		}
	}
	return m, nil
}

// observe sets the gauges from a plan.
func (m *metrics) observe(p plan) {
	for _, u := range p.usage {
		m.addresses.WithLabelValues(u.Pool, "used").Set(float64(u.Used))
		m.addresses.WithLabelValues(u.Pool, "free").Set(u.Free)
	}
	m.services.WithLabelValues("pending").Set(float64(len(p.pending)))
	m.services.WithLabelValues("allocated").Set(float64(p.allocated))
}
