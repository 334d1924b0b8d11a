package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vipd/vipd/balancer"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/health"
)

// For every check kind and starting state, whether the balancer lets a
// backend take connections is what the health monitor says: before any
// check, after a failed connect takes it down, and after checks bring it
// back. (Issue 9: `type: none` with `initial: unhealthy` started unhealthy
// in the balancer and healthy in health, and the pool refused everything.)
// The starting state is set past config's validation on purpose: even a
// combination config refuses cannot split the two views.
func TestBalancerAvailabilityIsTheMonitorsState(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})
	plain, tlsSrv := httptest.NewServer(ok), httptest.NewTLSServer(ok)
	t.Cleanup(plain.Close)
	t.Cleanup(tlsSrv.Close)
	tcpAddr, _ := namedBackend(t, "tcp")
	kinds := []struct{ health, addr string }{
		{"{type: tcp, interval: 20ms, rise: 1, fall: 1}", tcpAddr},
		{"{type: http, interval: 20ms, rise: 1, fall: 1}", plain.Listener.Addr().String()},
		{"{type: https, tls_skip_verify: true, interval: 20ms, rise: 1, fall: 1}", tlsSrv.Listener.Addr().String()},
		{"{type: none}", tcpAddr},
	}
	for _, k := range kinds {
		for _, initial := range []string{config.InitialHealthy, config.InitialUnhealthy} {
			cfg, err := config.Parse(fmt.Appendf(nil, "pools:\n  - name: web\n    backends: [{address: %s}]\n    health: %s\n", k.addr, k.health))
			if err != nil {
				t.Fatal(err)
			}
			h := &cfg.Pools[0].Health
			h.Initial = initial
			t.Run(h.Type+" initial "+initial, func(t *testing.T) {
				mon, err := health.NewMonitor(healthOptions(cfg))
				if err != nil {
					t.Fatal(err)
				}
				bopts, err := balancerOptions(cfg, mon)
				if err != nil {
					t.Fatal(err)
				}
				bal, err := balancer.New(bopts)
				if err != nil {
					t.Fatal(err)
				}
				agree := func(when string, want bool) {
					t.Helper()
					got, monitor := bal.Status()[0].Backends[0].Healthy, mon.Status()[0].Backends[0].Healthy
					if got != monitor || got != want {
						t.Fatalf("%s: balancer available %v, monitor healthy %v, want both %v", when, got, monitor, want)
					}
				}
				checked := h.Type != config.CheckNone
				agree("before any check", !checked || initial == config.InitialHealthy)
				mon.ConnectFailed("web", k.addr)
				agree("after a failed connect (fall 1)", !checked)

				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { mon.Run(ctx); close(done) }()
				deadline := time.Now().Add(10 * time.Second) // a failure bound, not a timing claim
				for mon.Summary().HealthyPools != 1 && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				cancel()
				<-done
				agree("after checks pass (rise 1)", true)
			})
		}
	}
}
