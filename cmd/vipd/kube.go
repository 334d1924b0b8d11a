package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"k8s.io/klog/v2"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/kube"
)

// newKube builds the Kubernetes mode of a config with a kubernetes section
// (nil without one). client-go's own log lines (klog) go to the daemon's
// logger, so every line stays structured.
func newKube(d *daemon, cfg *config.Config) (*kube.Controller, error) {
	if !cfg.Kubernetes.Enabled() {
		return nil, nil
	}
	klog.SetLogger(zapr.NewLogger(d.log.Named("client-go")))
	c, err := kube.New(kube.Options{
		Config: cfg.Kubernetes, Node: cfg.Node.Name, Leading: d.leading.Load,
		Logger: d.log.Named("kubernetes"), Registerer: d.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	return c, nil
}

// kubeLoop runs the Kubernetes mode until ctx ends and resyncs the running
// config each time what the Services serve changes.
func (d *daemon) kubeLoop(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.kube.Run(ctx); err != nil {
			d.log.Error("kubernetes mode stopped", zap.Error(err))
		}
	}()
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case <-d.kube.Changes():
			d.rec.Resync()
		}
	}
}

// eligible drops the frontends whose VIP this node may not hold for
// Kubernetes (externalTrafficPolicy Local without a local endpoint).
func (d *daemon) eligible(frontends []string) []string {
	if d.kube == nil {
		return frontends
	}
	return slices.DeleteFunc(frontends, func(fe string) bool { return !d.kube.Eligible(fe) })
}
