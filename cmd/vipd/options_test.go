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
	"github.com/vipd/vipd/election"
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

// A frontend's data-plane limits reach the balancer as written; a frontend
// without accept_proxy takes no PROXY header.
func TestBalancerOptionsCarryFrontendLimits(t *testing.T) {
	cfg, err := config.Parse([]byte(`
pools: [{name: web, backends: [{address: 127.0.0.1:9000}], health: {type: none}}]
frontends:
  - {name: a, listen: 127.0.0.1:8080, pool: web, max_connections_per_source: 7,
     accept_proxy: {from: [198.18.0.0/24], timeout: 2s}}
  - {name: b, listen: 127.0.0.1:8081, pool: web}
`))
	if err != nil {
		t.Fatal(err)
	}
	mon, err := health.NewMonitor(healthOptions(cfg))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := balancerOptions(cfg, mon)
	if err != nil {
		t.Fatal(err)
	}
	a, b := opts.Frontends[0], opts.Frontends[1]
	if ap := a.AcceptProxy; a.MaxConnectionsPerSource != 7 || ap == nil || len(ap.From) != 1 ||
		ap.From[0].String() != "198.18.0.0/24" || ap.Timeout != 2*time.Second {
		t.Fatalf("frontend a: per source %d, accept_proxy %+v", a.MaxConnectionsPerSource, a.AcceptProxy)
	}
	if b.AcceptProxy != nil || b.MaxConnectionsPerSource != 0 {
		t.Fatalf("frontend b: per source %d, accept_proxy %+v, want neither", b.MaxConnectionsPerSource, b.AcceptProxy)
	}
}

// TestElectionOptionsCarryTheTimingProfile: election runs each profile's
// durations and its leader watch as config resolved them.
func TestElectionOptionsCarryTheTimingProfile(t *testing.T) {
	for _, tc := range []struct {
		profile string
		want    election.Timing
	}{
		{"lan", election.Timing{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, Lease: 70 * time.Millisecond}},
		{"fast", election.Timing{Heartbeat: 65 * time.Millisecond, Election: 65 * time.Millisecond, Lease: 50 * time.Millisecond, WatchLeader: true}},
		{"{heartbeat: 200ms, election: 300ms, lease: 150ms}", election.Timing{Heartbeat: 200 * time.Millisecond, Election: 300 * time.Millisecond, Lease: 150 * time.Millisecond}},
	} {
		cfg, err := config.Parse([]byte("cluster: {timing: " + tc.profile + "}\n"))
		if err != nil {
			t.Fatalf("timing %s: %v", tc.profile, err)
		}
		if got := electionOptions(cfg).Timing; got != tc.want {
			t.Errorf("timing %s: election gets %+v, want %+v", tc.profile, got, tc.want)
		}
	}
}
