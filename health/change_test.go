package health

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// apply prepares pools (their checks completed) and applies them.
func (h *harness) apply(pools ...PoolChecks) {
	h.t.Helper()
	for i := range pools {
		pools[i].Check = complete(pools[i].Check)
	}
	c, err := h.m.Prepare(pools)
	if err != nil {
		h.t.Fatalf("Prepare: %v", err)
	}
	if err := c.Apply(); err != nil {
		h.t.Fatalf("Apply: %v", err)
	}
}

// handle is the Monitor's record of one backend, failing the test if there is none.
func (h *harness) handle(pool, addr string) *Backend {
	h.t.Helper()
	b, err := h.m.Backend(pool, addr)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// noChecksRan fails if an active check completed since the last step.
func (h *harness) noChecksRan(when string) {
	h.t.Helper()
	select {
	case r := <-h.checks:
		h.t.Fatalf("%s: a check ran (%s) though no timer fired", when, r)
	default:
	}
}

// A reload that keeps a backend's check keeps its record, its state and its
// worker's pending timer: a backend known up stays up, one known down stays
// down, no check runs early. A new backend starts from the initial state;
// a removed one's worker is stopped, its record no longer offered and its
// series gone.
func TestApplyKeepsStateAndWorkerOfUnchangedBackends(t *testing.T) {
	up, down, added, gone := newTCPServer(t), deadAddr(t), newTCPServer(t), newTCPServer(t)
	check := Check{Kind: KindTCP, Rise: 1, Fall: 1, StartHealthy: true}
	h := startMonitor(t,
		PoolChecks{Pool: "web", Backends: []string{up.addr(), down}, Check: check},
		PoolChecks{Pool: "old", Backends: []string{gone.addr()}, Check: check})
	h.fc.waitPending(t, 3)
	h.m.ConnectFailed("web", down) // fall 1: known down
	upB, downB := h.handle("web", up.addr()), h.handle("web", down)
	if !upB.Healthy() || downB.Healthy() {
		t.Fatalf("before: up %v, down %v", upB.Healthy(), downB.Healthy())
	}
	<-h.m.SummaryChanges() // the initial summary; web stays healthy throughout
	timers, trans, waiting := h.fc.made(), len(h.transitions()), h.fc.pendingTimers()

	// The same check, except the initial state, which only new backends take.
	newCheck := check
	newCheck.StartHealthy = false
	h.apply(PoolChecks{Pool: "web", Backends: []string{up.addr(), down, added.addr()}, Check: newCheck})

	if h.handle("web", up.addr()) != upB || h.handle("web", down) != downB {
		t.Fatal("a backend that stayed got a new record")
	}
	if !upB.Healthy() || downB.Healthy() {
		t.Fatalf("after: up %v, down %v; want the state carried over", upB.Healthy(), downB.Healthy())
	}
	if n := h.fc.stillPending(waiting); n != 2 {
		t.Fatalf("%d of the 3 timers set before the reload still wait, want the 2 kept workers'", n)
	}
	addedB := h.handle("web", added.addr())
	if addedB.Healthy() {
		t.Fatal("a new backend did not start from initial (unhealthy)")
	}
	h.fc.waitPending(t, 3) // the new backend's worker has started
	if n := h.fc.made() - timers; n != 1 {
		t.Fatalf("%d timers made by the reload, want 1 (the new backend's worker)", n)
	}
	if n := h.fc.pendingNow(); n != 3 {
		t.Fatalf("%d timers pending, want 3: the removed backend's worker still waits", n)
	}
	h.noChecksRan("after the reload")
	if got := h.transitions()[trans:]; len(got) != 0 {
		t.Fatalf("the reload caused transitions %+v", got)
	}
	if _, err := h.m.Backend("old", gone.addr()); err == nil {
		t.Fatal("the removed backend is still offered")
	}
	if _, ok := h.series("vipd_health_backend_up", map[string]string{"pool": "old", "backend": gone.addr()}); ok {
		t.Fatal("the removed backend's up series is still exported")
	}
	if _, ok := h.series("vipd_health_check_failures_total", map[string]string{"pool": "old", "backend": gone.addr(), "reason": ReasonRefused}); ok {
		t.Fatal("the removed backend's failure series is still exported")
	}
	if v := h.metric("vipd_health_backend_up", map[string]string{"pool": "web", "backend": added.addr()}); v != 0 {
		t.Fatalf("new backend's up gauge %v, want 0", v)
	}
	select {
	case s := <-h.m.SummaryChanges():
		if s != (Summary{Pools: 1, HealthyPools: 1}) {
			t.Fatalf("summary after the reload %+v", s)
		}
	default:
		t.Fatal("no summary sent though a pool went away")
	}
	if st := h.m.Status(); len(st) != 1 || len(st[0].Backends) != 3 {
		t.Fatalf("status %+v", st)
	}

	// The kept workers are the running ones: their checks and the new one's run.
	h.fc.fireAll()
	for range 3 {
		<-h.checks
	}
	h.wantTransitions("after the first checks", append(h.transitions()[:trans],
		transition{Pool: "web", Backend: added.addr(), Healthy: true, Reason: ReasonOK})...)
	if n := len(gone.accepted); n != 0 {
		t.Fatalf("the removed backend was checked %d times", n)
	}
}

// A changed check keeps the record and whether it is healthy (no flap);
// the new check takes over at once and its results drive rise and fall.
func TestApplyWithAChangedCheckKeepsStateAndRunsTheNewCheck(t *testing.T) {
	srv := newHTTPServer(t, nil)
	down, up := srv.addr(), newTCPServer(t).addr()
	tcp := Check{Kind: KindTCP, Rise: 1, Fall: 2, StartHealthy: true}
	h := startMonitor(t, PoolChecks{Pool: "web", Backends: []string{down, up}, Check: tcp})
	h.fc.waitPending(t, 2)
	h.m.ConnectFailed("web", down)
	h.m.ConnectFailed("web", down) // fall 2: down
	h.m.ConnectFailed("web", up)   // one failure toward fall
	downB, upB := h.handle("web", down), h.handle("web", up)
	timers, trans := h.fc.made(), h.transitions()

	h.apply(PoolChecks{Pool: "web", Backends: []string{down, up},
		Check: Check{Kind: KindHTTP, Path: "/readyz", Rise: 2, Fall: 2}})
	if h.handle("web", down) != downB || h.handle("web", up) != upB {
		t.Fatal("a backend whose check changed got a new record")
	}
	if downB.Healthy() || !upB.Healthy() {
		t.Fatalf("after the change: down %v, up %v; want the state carried over", downB.Healthy(), upB.Healthy())
	}
	h.wantTransitions("after the change", trans...)
	h.fc.waitPending(t, 2) // the old workers' timers were stopped, the new ones wait
	if n := h.fc.made() - timers; n != 2 {
		t.Fatalf("%d timers made, want 2: both workers restarted", n)
	}
	if st := h.m.Status()[0]; st.Kind != KindHTTP {
		t.Fatalf("status kind %s", st.Kind)
	}
	// The old check's streak is gone: one more failure is not fall 2.
	h.m.ConnectFailed("web", up)
	h.wantTransitions("after one failure under the new check", trans...)

	// The new check is the one that runs: an HTTP GET to /readyz. The tcp
	// backend does not speak HTTP and fails it (fall 2, with the passive one).
	h.fc.waitPending(t, 2)
	h.fc.fireAll()
	<-h.checks
	<-h.checks
	if srv.requests.Load() != 1 || srv.lastRequest().URL.Path != "/readyz" {
		t.Fatalf("server saw %d requests, last %v", srv.requests.Load(), srv.lastRequest())
	}
	wantDown := append(trans, transition{Pool: "web", Backend: up, Reason: ReasonNetwork})
	h.wantTransitions("after the first new checks", wantDown...)
	if downB.Healthy() {
		t.Fatal("up after one success of rise 2")
	}
	h.fc.waitPending(t, 2)
	h.fc.fireAll()
	<-h.checks
	<-h.checks
	h.wantTransitions("after two successes of rise 2",
		append(wantDown, transition{Pool: "web", Backend: down, Healthy: true, Reason: ReasonOK})...)

	// A check turned to none has nothing that could bring a backend back: healthy, no worker.
	h.fc.waitPending(t, 2)
	h.apply(PoolChecks{Pool: "web", Backends: []string{down, up}, Check: Check{Kind: KindNone}})
	if !upB.Healthy() || !downB.Healthy() {
		t.Fatalf("kind none: %v %v, want both healthy", downB.Healthy(), upB.Healthy())
	}
	if n := h.fc.pendingNow(); n != 0 {
		t.Fatalf("%d timers pending with kind none", n)
	}
	if got := h.transitions(); got[len(got)-1] != (transition{Pool: "web", Backend: up, Healthy: true, Reason: ReasonOK}) {
		t.Fatalf("transitions %+v, want the last to bring %s up", got, up)
	}
}

// A certificate rotated at the same path is a changed check; the same
// files are not.
func TestApplyRebuildsAnHTTPSCheckWhoseCertificateFileChanged(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	copyFile(t, newSelfSigned(t).certFile, ca)
	check := Check{Kind: KindHTTPS, CAFile: ca}
	h := startMonitor(t, PoolChecks{Pool: "api", Backends: []string{"127.0.0.1:1"}, Check: check})
	h.fc.waitPending(t, 1)
	timers, waiting := h.fc.made(), h.fc.pendingTimers()
	h.apply(PoolChecks{Pool: "api", Backends: []string{"127.0.0.1:1"}, Check: check})
	if n := h.fc.stillPending(waiting); n != 1 {
		t.Fatal("same certificate files: the worker was restarted")
	}
	copyFile(t, newSelfSigned(t).certFile, ca)
	h.apply(PoolChecks{Pool: "api", Backends: []string{"127.0.0.1:1"}, Check: check})
	if n := h.fc.stillPending(waiting); n != 0 {
		t.Fatal("rotated ca_file: the worker was kept")
	}
	h.fc.waitPending(t, 1)
	if n := h.fc.made() - timers; n != 1 {
		t.Fatalf("rotated ca_file: %d timers made, want 1 for the restarted worker", n)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A bad set is rejected whole with an error naming what is wrong, and a
// change prepared but not applied changes nothing either.
func TestPrepareRejectsABadSetAndChangesNothing(t *testing.T) {
	a, b := newTCPServer(t).addr(), newTCPServer(t).addr()
	good := complete(Check{Kind: KindTCP, StartHealthy: true})
	h := startMonitor(t, PoolChecks{Pool: "web", Backends: []string{a, b}, Check: good})
	h.fc.waitPending(t, 2)
	h.m.ConnectFailed("web", b)
	before := h.m.Status()
	handles := []*Backend{h.handle("web", a), h.handle("web", b)}
	timers := h.fc.made()

	zeroInterval := good
	zeroInterval.Interval = 0
	missingCA := complete(Check{Kind: KindHTTPS, CAFile: filepath.Join(t.TempDir(), "missing.pem")})
	added := newTCPServer(t).addr()
	cases := map[string]struct {
		pools []PoolChecks
		names []string // what the error must name
	}{
		"duplicate pool": {[]PoolChecks{{Pool: "web", Backends: []string{a}, Check: good}, {Pool: "web", Check: good}},
			[]string{`"web"`, "twice"}},
		"duplicate backend": {[]PoolChecks{{Pool: "web", Backends: []string{a, added, added}, Check: good}},
			[]string{`"web"`, added, "twice"}},
		"bad kind": {[]PoolChecks{{Pool: "api", Backends: []string{added}, Check: Check{Kind: "udp"}}, {Pool: "web", Backends: []string{a}, Check: good}},
			[]string{`"api"`, "udp"}},
		"zero interval": {[]PoolChecks{{Pool: "web", Backends: []string{a, added}, Check: zeroInterval}},
			[]string{`"web"`, "Interval"}},
		"missing ca_file": {[]PoolChecks{{Pool: "web", Backends: []string{a}, Check: good}, {Pool: "api", Backends: []string{added}, Check: missingCA}},
			[]string{`"api"`, "missing.pem"}},
		"no port": {[]PoolChecks{{Pool: "web", Backends: []string{a, "127.0.0.1"}, Check: good}},
			[]string{`"web"`, `"127.0.0.1"`}},
	}
	for name, tc := range cases {
		_, err := h.m.Prepare(tc.pools)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, want := range tc.names {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not name %s", name, err, want)
			}
		}
		t.Logf("%s: %v", name, err)
	}
	// Prepared, never applied.
	dropped, err := h.m.Prepare([]PoolChecks{{Pool: "api", Backends: []string{added}, Check: good}})
	if err != nil {
		t.Fatal(err)
	}
	if nb, err := dropped.Backend("api", added); err != nil || !nb.Healthy() {
		t.Fatalf("the change's new backend: %v, %v", nb, err)
	}

	wantUnchanged := func(when string) {
		t.Helper()
		if after := h.m.Status(); !equalStatus(before, after) {
			t.Fatalf("%s: status %+v, was %+v", when, after, before)
		}
		for i, addr := range []string{a, b} {
			if h.handle("web", addr) != handles[i] {
				t.Fatalf("%s: %s got a new record", when, addr)
			}
		}
		if n := h.fc.made() - timers; n != 0 {
			t.Fatalf("%s: %d timers made", when, n)
		}
		if _, err := h.m.Backend("api", added); err == nil {
			t.Fatalf("%s: a backend of the rejected set is offered", when)
		}
		if _, ok := h.series("vipd_health_backend_up", map[string]string{"pool": "api", "backend": added}); ok {
			t.Fatalf("%s: a backend of the rejected set has a series", when)
		}
	}
	wantUnchanged("after the rejected sets")

	// A change prepared against pools since replaced does not apply.
	first, err := h.m.Prepare([]PoolChecks{{Pool: "web", Backends: []string{a, b}, Check: good}})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Apply(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*Change{"applied twice": first, "prepared before another Apply": dropped} {
		if err := c.Apply(); err == nil {
			t.Errorf("%s: Apply accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	wantUnchanged("after the stale applies")
}

func equalStatus(a, b []PoolHealth) bool {
	return reflect.DeepEqual(a, b)
}

// Apply before Run hands Run the new set; Apply after Run starts nothing
// (goleak checks at exit).
func TestApplyBeforeAndAfterRun(t *testing.T) {
	srv := newTCPServer(t)
	m, err := NewMonitor(Options{})
	if err != nil {
		t.Fatal(err)
	}
	fc := newFakeClock()
	m.clock = fc
	pools := []PoolChecks{{Pool: "web", Backends: []string{srv.addr()}, Check: complete(Check{Kind: KindTCP, Rise: 1})}}
	c, err := m.Prepare(pools)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(); err != nil {
		t.Fatal(err)
	}
	up := make(chan transition, 1)
	m.onTransition = func(tr transition) { up <- tr }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	fc.waitPending(t, 1)
	fc.fireAll()
	select {
	case tr := <-up:
		if !tr.Healthy {
			t.Fatalf("transition %+v", tr)
		}
	case <-time.After(failAfter):
		t.Fatal("the backend applied before Run was never checked")
	}
	cancel()
	<-done
	timers := fc.made()
	pools[0].Backends = append(pools[0].Backends, newTCPServer(t).addr())
	if c, err = m.Prepare(pools); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(); err != nil {
		t.Fatal(err)
	}
	if n := fc.made() - timers; n != 0 {
		t.Fatalf("%d timers made after Run ended", n)
	}
}

// Applies that add, re-check and remove backends while their workers check
// on a real clock and the proxy reports: no race (under -race), and after
// the last Apply exactly its backends are offered and checked.
func TestApplyWhileChecksAndReportsRun(t *testing.T) {
	addrs := []string{newTCPServer(t).addr(), newTCPServer(t).addr(), newTCPServer(t).addr()}
	set := func(i int) []PoolChecks {
		c := complete(Check{Kind: KindTCP, Interval: time.Millisecond, Rise: 1 + i%2, StartHealthy: true})
		return []PoolChecks{{Pool: "web", Backends: addrs[i%2 : i%2+2], Check: c}}
	}
	m, err := NewMonitor(Options{Pools: set(0)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	reports := make(chan struct{})
	go func() {
		defer close(reports)
		for ctx.Err() == nil {
			for _, a := range addrs {
				m.ConnectFailed("web", a)
				m.ConnectSucceeded("web", a)
				_, _ = m.Backend("web", a)
			}
			_ = m.Status()
			_ = m.Summary()
		}
	}()
	for i := 1; i <= 20; i++ {
		c, err := m.Prepare(set(i))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // let the workers check in between
	}
	cancel()
	<-reports
	st := m.Status()[0]
	if len(st.Backends) != 2 || st.Backends[0].Address != addrs[0] || st.Backends[1].Address != addrs[1] {
		t.Fatalf("status after the last Apply %+v", st)
	}
	if _, err := m.Backend("web", addrs[2]); err == nil {
		t.Fatal("a backend the last Apply removed is offered")
	}
}
