package main

import (
	"errors"
	"fmt"
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vipd/vipd/balancer"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/health"
	"github.com/vipd/vipd/reconcile"
)

// dataPlane is the reconciler's target on this node: health checks, the
// balancer, the VIPs and the log level, in the order of
// docs/architecture.md ("Reconfiguring the data plane"), so that a set any
// component rejects leaves all as they were. The VIPs change last: a new
// VIP arrives with its frontends already bound.
type dataPlane struct {
	mon   *health.Monitor
	bal   *balancer.Balancer
	vips  *vipSet
	level *zap.AtomicLevel // nil: the logger's level is not ours to change (tests)
}

var _ reconcile.Target = dataPlane{}

func (p dataPlane) Apply(running, next *config.Config) error {
	level, err := zapcore.ParseLevel(next.Log.Level)
	if err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	vips, err := diffVIPs(running.VIPs, next.VIPs)
	if err != nil {
		return err
	}
	change, err := p.mon.Prepare(healthOptions(next).Pools)
	if err != nil {
		return fmt.Errorf("health checks: %w", err)
	}
	opts, err := balancerOptions(next, change)
	if err != nil {
		return fmt.Errorf("balancer: %w", err)
	}
	// A change dropped here, unapplied, has changed nothing.
	if err := p.bal.Reconfigure(opts, next.Node.ShutdownGrace); err != nil {
		return fmt.Errorf("balancer: %w", err)
	}
	// Fails only if another Apply came between; reloads are serialized.
	if err := change.Apply(); err != nil {
		return fmt.Errorf("health checks: %w", err)
	}
	if p.level != nil {
		p.level.SetLevel(level)
	}
	if err := p.vips.apply(vips); err != nil {
		return fmt.Errorf("vips: %w", err)
	}
	return nil
}

// onConfigApplied runs after the reconciler put a new config in place: the
// drain intent is re-applied to the new backend set, and the new digest is
// gossiped.
func (d *daemon) onConfigApplied(next *config.Config) {
	d.node.SetConfigDigest(config.Digest(next))
	select {
	case d.intentKick <- struct{}{}:
	default: // a re-apply is already pending; it reads the latest config
	}
}

// reload applies the config file live (SIGHUP, POST /v1/reload, systemctl
// reload), telling systemd RELOADING=1 while it runs and READY=1 after.
func (d *daemon) reload(trigger string) reconcile.Result {
	var res reconcile.Result
	d.notify.reloading(func() error {
		d.log.Info("config reload requested", zap.String("trigger", trigger))
		res = d.rec.Reload()
		if !res.OK() {
			return errors.New(res.Error)
		}
		return nil
	})
	return res
}

// serveReload answers POST /v1/reload with the reload's result: 200 when
// the file runs, 400 when it was invalid or changes restart-only keys, 500
// when a component could not apply it. Nothing changed unless it is 200.
func (d *daemon) serveReload(w http.ResponseWriter, _ *http.Request) {
	res := d.reload("admin API")
	code := http.StatusOK
	switch res.Result {
	case reconcile.Invalid, reconcile.Refused:
		code = http.StatusBadRequest
	case reconcile.Failed:
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, res)
}
