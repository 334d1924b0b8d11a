package balancer

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics exposes the atomics the hot path keeps anyway (collected on
// scrape, so counting costs nothing extra) plus the connect latency
// histogram. A scrape reads the running layout, so what a reload removed
// leaves the metrics with it; Reconfigure deletes its histogram series.
type metrics struct {
	layout *atomic.Pointer[layout] // set once by New: what is running, read at each scrape
	live   *liveSet                // set once by New: bytes of connections still relaying

	connectTime *prometheus.HistogramVec

	feActive, feAccepted, feRefused, feAcceptErrors *prometheus.Desc
	feIdleClosed                                    *prometheus.Desc
	beActive, beTotal, beBytes, beConnectErrors     *prometheus.Desc
	beHealthy, beDrained                            *prometheus.Desc
}

func newMetrics() *metrics {
	fe, be := []string{"frontend"}, []string{"pool", "backend"}
	return &metrics{
		connectTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vipd_backend_connect_duration_seconds",
			Help:    "Time to establish a TCP connection to a backend.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, be),
		feActive:        prometheus.NewDesc("vipd_frontend_active_connections", "Client connections open on a frontend.", fe, nil),
		feAccepted:      prometheus.NewDesc("vipd_frontend_connections_total", "Client connections accepted by a frontend, refused ones included.", fe, nil),
		feRefused:       prometheus.NewDesc("vipd_frontend_refused_connections_total", "Client connections closed at once, by reason (max_connections, no_backend, per_source, proxy_untrusted, proxy_bad_header, proxy_timeout).", []string{"frontend", "reason"}, nil),
		feAcceptErrors:  prometheus.NewDesc("vipd_frontend_accept_errors_total", "Failed accept calls (such as EMFILE), each followed by a backoff pause.", fe, nil),
		feIdleClosed:    prometheus.NewDesc("vipd_frontend_idle_timeouts_total", "Connections closed after idle_timeout without data either way.", fe, nil),
		beActive:        prometheus.NewDesc("vipd_backend_active_connections", "Connections open (or being opened) to a backend.", be, nil),
		beTotal:         prometheus.NewDesc("vipd_backend_connections_total", "Connections established to a backend.", be, nil),
		beBytes:         prometheus.NewDesc("vipd_backend_bytes_total", "Bytes relayed through a backend, by direction (client_to_backend, backend_to_client); connections still open count what their peers acknowledged so far.", []string{"pool", "backend", "direction"}, nil),
		beConnectErrors: prometheus.NewDesc("vipd_backend_connect_errors_total", "Failed connection attempts to a backend.", be, nil),
		beHealthy:       prometheus.NewDesc("vipd_backend_healthy", "1 when the backend is healthy.", be, nil),
		beDrained:       prometheus.NewDesc("vipd_backend_drained", "1 when the backend is drained.", be, nil),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	return errors.Join(r.Register(m), r.Register(m.connectTime))
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.feActive, m.feAccepted, m.feRefused, m.feAcceptErrors, m.feIdleClosed,
		m.beActive, m.beTotal, m.beBytes, m.beConnectErrors, m.beHealthy, m.beDrained} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	l := m.layout.Load()
	for _, f := range l.frontends {
		n := f.name
		ch <- prometheus.MustNewConstMetric(m.feActive, gauge, float64(f.active.Load()), n)
		ch <- prometheus.MustNewConstMetric(m.feAccepted, counter, float64(f.accepted.Load()), n)
		for r := range refusalKinds {
			ch <- prometheus.MustNewConstMetric(m.feRefused, counter, float64(f.refused[r].Load()), n, refusalNames[r])
		}
		ch <- prometheus.MustNewConstMetric(m.feAcceptErrors, counter, float64(f.acceptErrors.Load()), n)
		ch <- prometheus.MustNewConstMetric(m.feIdleClosed, counter, float64(f.idleClosed.Load()), n)
	}
	relayed := m.live.relayed(l.pools)
	for _, p := range l.pools {
		for _, be := range p.backends {
			l := []string{p.name, be.addr}
			ch <- prometheus.MustNewConstMetric(m.beActive, gauge, float64(be.active.Load()), l...)
			ch <- prometheus.MustNewConstMetric(m.beTotal, counter, float64(be.total.Load()), l...)
			ch <- prometheus.MustNewConstMetric(m.beBytes, counter, float64(relayed[be.backendState].up), p.name, be.addr, "client_to_backend")
			ch <- prometheus.MustNewConstMetric(m.beBytes, counter, float64(relayed[be.backendState].down), p.name, be.addr, "backend_to_client")
			ch <- prometheus.MustNewConstMetric(m.beConnectErrors, counter, float64(be.connectErrors.Load()), l...)
			ch <- prometheus.MustNewConstMetric(m.beHealthy, gauge, boolFloat(be.health.Healthy()), l...)
			ch <- prometheus.MustNewConstMetric(m.beDrained, gauge, boolFloat(be.drained.Load()), l...)
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
