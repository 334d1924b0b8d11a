package health

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Monitor's Prometheus collectors (prefix vipd_health_).
type metrics struct {
	up          *prometheus.GaugeVec
	duration    *prometheus.HistogramVec
	failures    *prometheus.CounterVec
	transitions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vipd_health_backend_up",
			Help: "1 when the backend is healthy (may take connections), else 0.",
		}, []string{"pool", "backend"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vipd_health_check_duration_seconds",
			Help:    "Duration of active health checks, successful or not.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"pool", "backend"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_health_check_failures_total",
			Help: "Failed health checks by reason; reason=passive counts the proxy's failed connects.",
		}, []string{"pool", "backend", "reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_health_transitions_total",
			Help: "Backend state changes, by the state entered (up or down).",
		}, []string{"pool", "backend", "to"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.up, m.duration, m.failures, m.transitions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register health metrics: %w", err)
		}
	}
	return m, nil
}

// backendMetrics are one backend's children, resolved once so the hot path
// (ConnectFailed) does no label lookup.
type backendMetrics struct {
	up       prometheus.Gauge
	duration prometheus.Observer
	failures map[string]prometheus.Counter // by reason; read-only after construction
	toUp     prometheus.Counter
	toDown   prometheus.Counter
}

func (m *metrics) forBackend(pool, backend string) backendMetrics {
	bm := backendMetrics{
		up:       m.up.WithLabelValues(pool, backend),
		duration: m.duration.WithLabelValues(pool, backend),
		failures: make(map[string]prometheus.Counter, len(failureReasons)),
		toUp:     m.transitions.WithLabelValues(pool, backend, "up"),
		toDown:   m.transitions.WithLabelValues(pool, backend, "down"),
	}
	for _, r := range failureReasons {
		bm.failures[r] = m.failures.WithLabelValues(pool, backend, r)
	}
	return bm
}

// deleteBackend removes every series of a backend no longer checked.
func (m *metrics) deleteBackend(pool, backend string) {
	l := prometheus.Labels{"pool": pool, "backend": backend}
	m.up.DeletePartialMatch(l)
	m.duration.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
	m.transitions.DeletePartialMatch(l)
}
