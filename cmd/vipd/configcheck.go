package main

import (
	"reflect"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vipd/vipd/config"
)

// configCheck is what a SIGHUP found in the config file.
type configCheck string

const (
	configUnchanged configCheck = "unchanged"
	configChanged   configCheck = "changed"
	configInvalid   configCheck = "invalid"
)

// configMetrics count SIGHUP checks and flag a running config that the file
// no longer matches, so a forgotten restart shows up in Prometheus.
type configMetrics struct {
	checks         *prometheus.CounterVec
	restartPending prometheus.Gauge
}

func newConfigMetrics(reg prometheus.Registerer) *configMetrics {
	m := &configMetrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_config_checks_total",
			Help: "Config file checks on SIGHUP, by result: unchanged, changed (restart to apply) or invalid.",
		}, []string{"result"}),
		restartPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vipd_config_restart_pending",
			Help: "1 when the last SIGHUP found a valid config file that differs from the running config.",
		}),
	}
	for _, r := range []configCheck{configUnchanged, configChanged, configInvalid} {
		m.checks.WithLabelValues(string(r)) // exported at 0 before the first SIGHUP
	}
	reg.MustRegister(m.checks, m.restartPending)
	return m
}

// checkConfigFile answers SIGHUP. vipd does not reload: it validates the file
// it was started with and says whether a restart would change anything and
// what. Without this, SIGHUP (keepalived's and HAProxy's reload signal) would
// kill the daemon without releasing the VIP. It never changes the running
// state, and it names the sections that differ, never their values: the
// cluster secret is one of them.
func (d *daemon) checkConfigFile() configCheck {
	if d.configPath == "" {
		d.log.Warn("SIGHUP: running the embedded default config, there is no file to check")
		return configUnchanged
	}
	next, err := config.Load(d.configPath)
	result := configUnchanged
	switch {
	case err != nil:
		result = configInvalid
		d.log.Error("SIGHUP: config file is invalid; the running config is unchanged",
			zap.String("path", d.configPath), zap.Error(err))
	default:
		if diff := changedSections(d.cfg, next); len(diff) > 0 {
			result = configChanged
			d.log.Warn("SIGHUP: config file differs from the running config; vipd does not reload, restart it to apply (one node at a time)",
				zap.String("path", d.configPath), zap.Strings("sections", diff))
		} else {
			d.log.Info("SIGHUP: config file matches the running config", zap.String("path", d.configPath))
		}
	}
	d.configMetrics.checks.WithLabelValues(string(result)).Inc()
	switch result { // an invalid file says nothing about a pending restart
	case configChanged:
		d.configMetrics.restartPending.Set(1)
	case configUnchanged:
		d.configMetrics.restartPending.Set(0)
	}
	return result
}

// changedSections names the top-level config sections (by their YAML key)
// that differ between running and next.
func changedSections(running, next *config.Config) []string {
	a, b := reflect.ValueOf(*running), reflect.ValueOf(*next)
	var out []string
	for i := range a.NumField() {
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			out = append(out, a.Type().Field(i).Tag.Get("yaml"))
		}
	}
	return out
}
