package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// wantTransitions fails unless exactly want transitions were reported so far.
func (h *harness) wantTransitions(when string, want ...transition) {
	h.t.Helper()
	got := h.transitions()
	if len(got) != len(want) {
		h.t.Fatalf("%s: transitions %+v, want %+v", when, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			h.t.Fatalf("%s: transition %d is %+v, want %+v", when, i, got[i], want[i])
		}
	}
}

func TestBackendThatStopsListeningLeavesAfterExactlyFallFailedChecks(t *testing.T) {
	s := newTCPServer(t)
	addr := s.addr()
	h := startMonitor(t, PoolChecks{Pool: "web", Backends: []string{addr},
		Check: Check{Kind: KindTCP, Rise: 2, Fall: 3, Timeout: failAfter, StartHealthy: true}})
	for range 2 {
		if r := h.step(); r != ReasonOK {
			t.Fatalf("check against a listener: %s", r)
		}
	}
	waitAccepted(t, s.accepted, 2)
	s.stop()
	if n := len(s.accepted); n != 0 {
		t.Fatalf("server accepted %d more connections than the 2 checks made", n)
	}
	for i := 1; i <= 2; i++ {
		if r := h.step(); r != ReasonRefused {
			t.Fatalf("failed check %d: reason %s, want refused", i, r)
		}
		h.wantTransitions(fmt.Sprintf("after %d failed checks of fall 3", i))
	}
	h.step()
	down := transition{Pool: "web", Backend: addr, Healthy: false, Reason: ReasonRefused}
	h.wantTransitions("after 3 failed checks", down)
	labels := map[string]string{"pool": "web", "backend": addr}
	if v := h.metric("vipd_health_backend_up", labels); v != 0 {
		t.Errorf("up gauge %v after going down", v)
	}
	labels["reason"] = ReasonRefused
	if v := h.metric("vipd_health_check_failures_total", labels); v != 3 {
		t.Errorf("refused failures counted %v, want 3", v)
	}
	delete(labels, "reason")
	labels["to"] = "down"
	if v := h.metric("vipd_health_transitions_total", labels); v != 1 {
		t.Errorf("down transitions counted %v, want 1", v)
	}
	st := h.m.Status()[0].Backends[0]
	if st.Healthy || st.ConsecutiveFailures != 3 || st.Checks != 5 || st.LastReason != ReasonRefused || !strings.Contains(st.LastError, "refused") {
		t.Errorf("status %+v", st)
	}
}

func TestBackendThatAcceptsAndNeverAnswersFailsWithTimeout(t *testing.T) {
	s := newSilentServer(t)
	addr := s.ln.Addr().String()
	h := startMonitor(t, PoolChecks{Pool: "api", Backends: []string{addr},
		Check: Check{Kind: KindHTTP, Fall: 2, Timeout: 100 * time.Millisecond, StartHealthy: true}})
	for i := range 2 {
		if r := h.step(); r != ReasonTimeout {
			t.Fatalf("check %d: reason %s, want timeout", i, r)
		}
	}
	h.wantTransitions("after 2 timeouts", transition{Pool: "api", Backend: addr, Reason: ReasonTimeout})
	waitAccepted(t, s.accepted, 2) // one fresh connection per check
}

func TestBackendAnswering503FailsWithStatus(t *testing.T) {
	s := newHTTPServer(t, nil)
	s.status.Store(http.StatusServiceUnavailable)
	h := startMonitor(t, PoolChecks{Pool: "api", Backends: []string{s.addr()},
		Check: Check{Kind: KindHTTP, Path: "/readyz", ExpectStatus: []StatusRange{{200, 200}}, Fall: 2, Timeout: failAfter, StartHealthy: true}})
	if r := h.step(); r != ReasonStatus {
		t.Fatalf("reason %s, want status", r)
	}
	h.wantTransitions("after 1 of fall 2")
	h.step()
	h.wantTransitions("after 2 of fall 2", transition{Pool: "api", Backend: s.addr(), Reason: ReasonStatus})
	if got := s.requests.Load(); got != 2 {
		t.Errorf("server saw %d requests for 2 checks", got)
	}
}

func TestHTTPSBackendWithSelfSignedCertificate(t *testing.T) {
	cert := newSelfSigned(t)
	s := newHTTPServer(t, &tls.Config{Certificates: []tls.Certificate{cert.cert}})
	addr := s.addr()
	t.Run("fails with reason tls without tls_skip_verify", func(t *testing.T) {
		h := startMonitor(t, PoolChecks{Pool: "api", Backends: []string{addr},
			Check: Check{Kind: KindHTTPS, Rise: 1, Fall: 1, Timeout: failAfter, StartHealthy: true}})
		h.step()
		h.wantTransitions("after 1 check", transition{Pool: "api", Backend: addr, Reason: ReasonTLS})
	})
	for name, c := range map[string]Check{
		"passes with tls_skip_verify": {TLSSkipVerify: true},
		"passes with ca_file":         {CAFile: cert.certFile},
	} {
		t.Run(name, func(t *testing.T) {
			before := s.requests.Load()
			c.Kind, c.Rise, c.Fall, c.Timeout = KindHTTPS, 1, 1, failAfter
			h := startMonitor(t, PoolChecks{Pool: "api", Backends: []string{addr}, Check: c})
			h.step()
			h.wantTransitions("after 1 check", transition{Pool: "api", Backend: addr, Healthy: true, Reason: ReasonOK})
			if got := s.requests.Load() - before; got != 1 {
				t.Errorf("server saw %d requests for 1 check", got)
			}
		})
	}
}

func TestFlappingBackendReentersOnlyAfterExactlyRiseConsecutiveSuccesses(t *testing.T) {
	s := newHTTPServer(t, nil)
	addr := s.addr()
	h := startMonitor(t, PoolChecks{Pool: "web", Backends: []string{addr},
		Check: Check{Kind: KindHTTP, Rise: 3, Fall: 2, Timeout: failAfter}})
	up := transition{Pool: "web", Backend: addr, Healthy: true, Reason: ReasonOK}
	down := transition{Pool: "web", Backend: addr, Reason: ReasonStatus}
	var want []transition
	// Each step: the status the server answers, and the transition it must cause.
	steps := []struct {
		status int
		causes *transition
	}{
		{200, nil}, {200, nil}, {503, nil}, // 2 successes then a failure: the streak is broken
		{200, nil}, {200, nil}, {200, &up}, // exactly rise=3 consecutive successes
		{503, nil}, {200, nil}, {503, nil}, // failures never consecutive: stays up
		{503, &down}, // exactly fall=2
		{200, nil}, {200, nil}, {503, nil}, {200, nil}, {200, nil}, {200, &up},
	}
	for i, st := range steps {
		s.status.Store(int64(st.status))
		h.step()
		if st.causes != nil {
			want = append(want, *st.causes)
		}
		h.wantTransitions(fmt.Sprintf("after check %d", i+1), want...)
	}
	if got := s.requests.Load(); got != int64(len(steps)) {
		t.Errorf("server saw %d requests for %d checks", got, len(steps))
	}
}

func TestExpectBodyMismatchFailsWithBody(t *testing.T) {
	s := newHTTPServer(t, nil)
	s.body.Store(`{"status":"starting"}`)
	h := startMonitor(t, PoolChecks{Pool: "web", Backends: []string{s.addr()},
		Check: Check{Kind: KindHTTP, ExpectBody: `"status":"ready"`, Rise: 1, Fall: 1, Timeout: failAfter, StartHealthy: true}})
	if r := h.step(); r != ReasonBody {
		t.Fatalf("reason %s, want body", r)
	}
	h.wantTransitions("after mismatch", transition{Pool: "web", Backend: s.addr(), Reason: ReasonBody})
	s.body.Store(`{"status":"ready"}`)
	h.step()
	h.wantTransitions("after match", transition{Pool: "web", Backend: s.addr(), Reason: ReasonBody},
		transition{Pool: "web", Backend: s.addr(), Healthy: true, Reason: ReasonOK})
}

func TestPassiveFailuresTakeBackendOutBetweenActiveChecks(t *testing.T) {
	s := newTCPServer(t)
	addr := s.addr()
	h := startMonitor(t,
		PoolChecks{Pool: "web", Backends: []string{addr}, Check: Check{Kind: KindTCP, Rise: 2, Fall: 3, Timeout: failAfter, StartHealthy: true}},
		PoolChecks{Pool: "static", Backends: []string{addr}, Check: Check{Kind: KindNone}})
	// No timer fires in this part: every change comes from the proxy's reports.
	h.m.ConnectFailed("web", addr)
	h.m.ConnectFailed("web", addr)
	h.m.ConnectSucceeded("web", addr) // the streak ends: those were transient
	h.m.ConnectFailed("web", addr)
	h.m.ConnectFailed("web", addr)
	h.m.ConnectFailed("nope", addr)       // unknown pool
	h.m.ConnectFailed("web", "1.2.3.4:5") // unknown backend
	for range 5 {
		h.m.ConnectFailed("static", addr) // no active check could bring it back: ignored
	}
	h.wantTransitions("after 2+2 passive failures split by a success")
	h.m.ConnectFailed("web", addr)
	down := transition{Pool: "web", Backend: addr, Reason: ReasonPassive}
	h.wantTransitions("after 3 consecutive passive failures", down)

	for range 10 {
		h.m.ConnectSucceeded("web", addr)
	}
	h.wantTransitions("after connect successes on a down backend", down)
	if st := h.m.Status()[1].Backends[0]; !st.Healthy {
		t.Errorf("kind none backend unhealthy after ConnectFailed: %+v", st)
	}
	if n := len(s.accepted); n != 0 {
		t.Fatalf("%d active checks ran before any timer fired", n)
	}
	if v := h.metric("vipd_health_check_failures_total", map[string]string{"pool": "web", "backend": addr, "reason": ReasonPassive}); v != 5 {
		t.Errorf("passive failures counted %v, want 5", v)
	}
	h.step()
	h.wantTransitions("after 1 of rise 2", down)
	h.step()
	h.wantTransitions("after 2 of rise 2", down, transition{Pool: "web", Backend: addr, Healthy: true, Reason: ReasonOK})
	waitAccepted(t, s.accepted, 2)
}

func TestConnectReportsDoNotAllocate(t *testing.T) {
	m, err := NewMonitor(Options{Pools: []PoolChecks{{Pool: "web", Backends: []string{"127.0.0.1:1"},
		Check: complete(Check{Kind: KindTCP, Fall: 1 << 30, StartHealthy: true})}}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(){
		"ConnectSucceeded":                 func() { m.ConnectSucceeded("web", "127.0.0.1:1") },
		"ConnectFailed without transition": func() { m.ConnectFailed("web", "127.0.0.1:1") },
		"ConnectFailed unknown backend":    func() { m.ConnectFailed("web", "127.0.0.1:2") },
		"ConnectSucceeded unknown pool":    func() { m.ConnectSucceeded("api", "127.0.0.1:1") },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per call", name, n)
		}
	}
}

func BenchmarkConnectSucceeded(b *testing.B) {
	m, err := NewMonitor(Options{Pools: []PoolChecks{{Pool: "web", Backends: []string{"127.0.0.1:1", "127.0.0.1:2"},
		Check: complete(Check{Kind: KindTCP})}}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ConnectSucceeded("web", "127.0.0.1:2")
		}
	})
}

func TestSummaryCountsPoolsWithAHealthyBackendAndChangesAreDelivered(t *testing.T) {
	a1, a2, b1 := newTCPServer(t), newTCPServer(t), newTCPServer(t)
	passive := Check{Kind: KindTCP, Rise: 1, Fall: 1, Timeout: failAfter, StartHealthy: true}
	h := startMonitor(t,
		PoolChecks{Pool: "a", Backends: []string{a1.addr(), a2.addr()}, Check: passive},
		PoolChecks{Pool: "b", Backends: []string{b1.addr()}, Check: passive},
		PoolChecks{Pool: "c", Backends: []string{"127.0.0.1:1"}, Check: Check{Kind: KindNone}},
		PoolChecks{Pool: "empty", Check: passive})
	ch := h.m.SummaryChanges()
	recv := func(when string, want Summary) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("%s: received %+v, want %+v", when, got, want)
			}
		default:
			t.Fatalf("%s: nothing to receive, want %+v", when, want)
		}
		if got := h.m.Summary(); got != want {
			t.Fatalf("%s: Summary() %+v, want %+v", when, got, want)
		}
	}
	noChange := func(when string) {
		t.Helper()
		select {
		case got := <-ch:
			t.Fatalf("%s: received %+v, want nothing", when, got)
		default:
		}
	}
	recv("initially", Summary{Pools: 4, HealthyPools: 3}) // a pool without backends is never healthy
	if h.m.Summary().Fit() {
		t.Fatal("fit with an empty pool")
	}
	h.m.ConnectFailed("a", a1.addr())
	noChange("pool a still has a2")
	h.m.ConnectFailed("b", b1.addr())
	recv("pool b down", Summary{Pools: 4, HealthyPools: 2})
	h.m.ConnectFailed("a", a2.addr())
	h.m.ConnectFailed("a", a2.addr()) // no second transition, no second value
	h.fc.waitPending(t, 3)
	h.fc.fireAll() // a1, a2 and b1 come back (rise 1): three changes, unread
	for range 3 {
		<-h.checks
	}
	recv("latest value only", Summary{Pools: 4, HealthyPools: 3})
	noChange("after reading the latest")
	if got := len(h.transitions()); got != 6 {
		t.Errorf("%d transitions, want 3 down and 3 up", got)
	}
	if !(Summary{Pools: 2, HealthyPools: 2}).Fit() || (Summary{Pools: 2, HealthyPools: 1}).Fit() {
		t.Error("Fit disagrees with its definition")
	}
}

// A PerVIP pool (a Kubernetes Service's) is out of the Summary, healthy or
// not, so a Service without a healthy endpoint makes no node unfit; a
// pool of the file with no healthy backend still counts.
func TestSummaryLeavesOutPerVIPPools(t *testing.T) {
	up := Check{Kind: KindTCP, Rise: 1, Fall: 1, Timeout: failAfter, StartHealthy: true}
	down := up
	down.StartHealthy = false
	h := startMonitor(t,
		PoolChecks{Pool: "file-up", Backends: []string{"127.0.0.1:1"}, Check: up},
		PoolChecks{Pool: "file-down", Backends: []string{"127.0.0.1:2"}, Check: down},
		PoolChecks{Pool: "svc-up", Backends: []string{"127.0.0.1:3"}, Check: up, PerVIP: true},
		PoolChecks{Pool: "svc-down", Backends: []string{"127.0.0.1:4"}, Check: down, PerVIP: true},
		PoolChecks{Pool: "svc-empty", Check: up, PerVIP: true})
	want := Summary{Pools: 2, HealthyPools: 1}
	if got := h.m.Summary(); got != want {
		t.Fatalf("Summary() %+v, want %+v: only the two file pools, one healthy", got, want)
	}
	if got := <-h.m.SummaryChanges(); got != want {
		t.Fatalf("first summary delivered %+v, want %+v", got, want)
	}
	if !h.handle("svc-up", "127.0.0.1:3").Healthy() {
		t.Fatal("a PerVIP pool's backend is not checked as its own: svc-up is not healthy")
	}
	h.m.ConnectFailed("svc-up", "127.0.0.1:3") // fall 1: down
	if h.handle("svc-up", "127.0.0.1:3").Healthy() {
		t.Fatal("svc-up's backend stayed up after a failed connect")
	}
	if got := h.m.Summary(); got != want {
		t.Errorf("a PerVIP pool going down changed the Summary to %+v", got)
	}
	select {
	case got := <-h.m.SummaryChanges():
		t.Errorf("a PerVIP pool going down delivered a summary %+v", got)
	default:
	}

	// Through a reload: a PerVIP pool added, the unhealthy file pool
	// removed. The node is fit with its one healthy file pool.
	h.apply(
		PoolChecks{Pool: "file-up", Backends: []string{"127.0.0.1:1"}, Check: up},
		PoolChecks{Pool: "svc-new", Backends: []string{"127.0.0.1:5"}, Check: down, PerVIP: true},
		PoolChecks{Pool: "svc-empty", Check: up, PerVIP: true})
	want = Summary{Pools: 1, HealthyPools: 1}
	if got := h.m.Summary(); got != want || !got.Fit() {
		t.Errorf("after the reload Summary() %+v (fit %v), want %+v, fit", got, got.Fit(), want)
	}
	select {
	case got := <-h.m.SummaryChanges():
		if got != want {
			t.Errorf("after the reload delivered %+v, want %+v", got, want)
		}
	default:
		t.Errorf("the reload delivered no summary, want %+v", want)
	}
}

func TestIntervalsAreJitteredAndFastWhileAChangeIsPending(t *testing.T) {
	s := newHTTPServer(t, nil)
	const interval, fast = 10 * time.Second, time.Second
	h := startMonitor(t, PoolChecks{Pool: "web", Backends: []string{s.addr()},
		Check: Check{Kind: KindHTTP, Interval: interval, FastInterval: fast, Rise: 2, Fall: 3, Timeout: failAfter, StartHealthy: true}})
	within := func(when string, d, lo, hi time.Duration) {
		t.Helper()
		if d < lo || d > hi {
			t.Fatalf("%s: delay %v outside [%v, %v]", when, d, lo, hi)
		}
	}
	h.fc.waitPending(t, 1)
	within("initial offset", h.fc.lastDelay(), 0, interval)
	pattern := []struct {
		status int
		fast   bool
	}{
		{200, false}, // healthy, steady
		{503, true},  // healthy with a failure: confirm fast
		{503, true},
		{503, false}, // down (fall 3): steady again
		{200, true},  // unhealthy with a success: confirm fast
		{200, false}, // up (rise 2)
	}
	for i, p := range pattern {
		s.status.Store(int64(p.status))
		h.step()
		h.fc.waitPending(t, 1)
		base := interval
		if p.fast {
			base = fast
		}
		within(fmt.Sprintf("after check %d", i+1), h.fc.lastDelay(), base-base/10, base+base/10)
	}
	t.Logf("delays asked for: %v", h.fc.delays)
}

func TestRunAbortsAnInFlightCheckAndStopsEveryWorker(t *testing.T) {
	s := newSilentServer(t)
	reg := prometheus.NewRegistry()
	fc := newFakeClock()
	m, err := NewMonitor(Options{Registerer: reg, Pools: []PoolChecks{
		{Pool: "web", Backends: []string{s.ln.Addr().String()}, Check: complete(Check{Kind: KindHTTP, Timeout: time.Hour})},
		{Pool: "idle", Backends: []string{"127.0.0.1:1", "127.0.0.1:2"}, Check: complete(Check{Kind: KindTCP})},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m.clock = fc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	fc.waitPending(t, 3)
	fc.fireAll() // the idle backends are refused at once and wait again
	select {
	case <-s.accepted: // the web check now waits on a silent server (timeout 1h)
	case <-time.After(failAfter):
		t.Fatal("the web check never connected")
	}
	fc.waitPending(t, 2)
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(failAfter):
		t.Fatal("Run did not return after cancel")
	}
	t.Logf("Run returned %v after cancel with a check in flight", time.Since(start))
	m.Run(ctx) // a second Run returns at once
}

func TestNewMonitorErrorsNameTheFile(t *testing.T) {
	cert := newSelfSigned(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing-ca.pem")
	cases := map[string]struct {
		c    Check
		want string
	}{
		"missing ca_file":     {Check{CAFile: missing}, missing},
		"ca_file without PEM": {Check{CAFile: garbage}, garbage},
		"missing cert_file":   {Check{CertFile: missing, KeyFile: cert.keyFile}, missing},
		"key does not parse":  {Check{CertFile: cert.certFile, KeyFile: garbage}, garbage},
		"cert without key":    {Check{CertFile: cert.certFile}, "key_file"},
	}
	for name, tc := range cases {
		c := tc.c
		c.Kind = KindHTTPS
		c = complete(c)
		_, err := NewMonitor(Options{Pools: []PoolChecks{{Pool: "api", Backends: []string{"127.0.0.1:6443"}, Check: c}}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"api"`) {
			t.Errorf("%s: error %v, want it to name %s and the pool", name, err, tc.want)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestNewMonitorRejectsInvalidChecks(t *testing.T) {
	ok := complete(Check{Kind: KindTCP})
	relative := complete(Check{Kind: KindHTTP})
	relative.Path = "readyz"
	cases := map[string][]PoolChecks{
		"unknown kind":      {{Pool: "p", Check: Check{Kind: "udp"}}},
		"relative path":     {{Pool: "p", Backends: []string{"127.0.0.1:80"}, Check: relative}},
		"duplicate pool":    {{Pool: "p", Check: ok}, {Pool: "p", Check: ok}},
		"duplicate backend": {{Pool: "p", Backends: []string{"127.0.0.1:80", "127.0.0.1:80"}, Check: ok}},
		"no port":           {{Pool: "p", Backends: []string{"127.0.0.1"}, Check: ok}},
	}
	for name, pools := range cases {
		if _, err := NewMonitor(Options{Pools: pools}); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := NewMonitor(Options{Pools: []PoolChecks{{Pool: "p", Backends: []string{"127.0.0.1:80", "[::1]:80"}, Check: ok}}}); err != nil {
		t.Errorf("valid pool rejected: %v", err)
	}
}

// Defaults live in config alone: a required value left zero (or negative)
// is an error that names it, never silently replaced by a value of health's
// own.
func TestNewMonitorRejectsAZeroWhereAValueIsRequired(t *testing.T) {
	cases := map[string]func(*Check){
		"Interval":     func(c *Check) { c.Interval = 0 },
		"FastInterval": func(c *Check) { c.FastInterval = 0 },
		"Timeout":      func(c *Check) { c.Timeout = -time.Second },
		"Rise":         func(c *Check) { c.Rise = 0 },
		"Fall":         func(c *Check) { c.Fall = 0 },
		"ExpectStatus": func(c *Check) { c.ExpectStatus = nil },
	}
	for field, zero := range cases {
		c := complete(Check{Kind: KindHTTP})
		zero(&c)
		_, err := NewMonitor(Options{Pools: []PoolChecks{{Pool: "api", Backends: []string{"127.0.0.1:80"}, Check: c}}})
		if err == nil || !strings.Contains(err.Error(), field) || !strings.Contains(err.Error(), `"api"`) {
			t.Errorf("%s left out: error %v, want one naming %s and the pool", field, err, field)
		} else {
			t.Logf("%s left out: %v", field, err)
		}
	}
	// A check that never runs needs none of them.
	if _, err := NewMonitor(Options{Pools: []PoolChecks{{Pool: "static", Backends: []string{"127.0.0.1:80"}, Check: Check{Kind: KindNone}}}}); err != nil {
		t.Errorf("kind none without values: %v", err)
	}
}

func TestKindNoneIsAlwaysHealthyAndNeverChecked(t *testing.T) {
	m, err := NewMonitor(Options{Pools: []PoolChecks{{Pool: "p", Backends: []string{"127.0.0.1:1"}, Check: Check{Kind: KindNone}}}})
	if err != nil {
		t.Fatal(err)
	}
	be, err := m.Backend("p", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		m.ConnectFailed("p", "127.0.0.1:1") // no check could bring it back: ignored
	}
	if st := m.Status(); !be.Healthy() || !st[0].Backends[0].Healthy || st[0].Kind != KindNone || !m.Summary().Fit() {
		t.Fatalf("handle healthy %v, status %+v, summary %+v", be.Healthy(), st, m.Summary())
	}
	if be.spec.Load().prober != nil {
		t.Fatal("a kind none backend would get a worker")
	}
}

// The handle the balancer asks is the Monitor's own state, for every kind
// and starting state, before any check and across transitions both ways.
func TestBackendHandleIsTheMonitorsState(t *testing.T) {
	cert := newSelfSigned(t)
	addrs := map[Kind]string{
		KindTCP:   newTCPServer(t).addr(),
		KindHTTP:  newHTTPServer(t, nil).addr(),
		KindHTTPS: newHTTPServer(t, &tls.Config{Certificates: []tls.Certificate{cert.cert}}).addr(),
		KindNone:  "127.0.0.1:1",
	}
	for kind, addr := range addrs {
		for _, start := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s start healthy %v", kind, start), func(t *testing.T) {
				h := startMonitor(t, PoolChecks{Pool: "p", Backends: []string{addr},
					Check: Check{Kind: kind, Rise: 1, Fall: 1, TLSSkipVerify: kind == KindHTTPS, StartHealthy: start}})
				be, err := h.m.Backend("p", addr)
				if err != nil {
					t.Fatal(err)
				}
				agree := func(when string, want bool) {
					t.Helper()
					if got, st := be.Healthy(), h.m.Status()[0].Backends[0].Healthy; got != want || st != want {
						t.Fatalf("%s: handle says %v, status %v, want %v", when, got, st, want)
					}
				}
				agree("before any check", start || kind == KindNone)
				if !be.HealthySince().IsZero() {
					t.Fatalf("healthy since %v before any transition", be.HealthySince())
				}
				h.m.ConnectFailed("p", addr)
				agree("after a failed connect (fall 1)", kind == KindNone)
				if kind == KindNone {
					return
				}
				before := time.Now()
				if r := h.step(); r != ReasonOK {
					t.Fatalf("check: %s", r)
				}
				agree("after a passing check (rise 1)", true)
				if since := be.HealthySince(); since.Before(before) {
					t.Fatalf("healthy since %v, before the check that raised it (%v)", since, before)
				}
			})
		}
	}
	if _, err := startMonitor(t).m.Backend("p", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unknown backend: %v", err)
	}
}

func TestRealClockBringsABackendUp(t *testing.T) {
	s := newHTTPServer(t, nil)
	ups := make(chan transition, 1)
	m, err := NewMonitor(Options{
		Pools: []PoolChecks{{Pool: "web", Backends: []string{s.addr()},
			Check: complete(Check{Kind: KindHTTP, Interval: 20 * time.Millisecond, Rise: 2})}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.onTransition = func(tr transition) { ups <- tr }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	start := time.Now()
	select {
	case tr := <-ups:
		if !tr.Healthy {
			t.Fatalf("transition %+v", tr)
		}
	case <-time.After(failAfter):
		t.Fatal("backend never came up")
	}
	t.Logf("up after %v with interval 20ms, rise 2; server saw %d requests", time.Since(start), s.requests.Load())
	if got := s.requests.Load(); got < 2 {
		t.Fatalf("up after %d requests, rise 2", got)
	}
}
