package balancer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// fakeTimers stands in for time.AfterFunc: retirements fire when the test
// says, so a grace period ends at a known point and not by the clock.
type fakeTimers struct {
	mu     sync.Mutex
	timers []*fakeTimer // guarded by mu
}

type fakeTimer struct {
	ft   *fakeTimers
	d    time.Duration
	f    func()
	done bool // guarded by ft.mu: fired or stopped
}

func (ft *fakeTimers) afterFunc(d time.Duration, f func()) stopper {
	t := &fakeTimer{ft: ft, d: d, f: f}
	ft.mu.Lock()
	ft.timers = append(ft.timers, t)
	ft.mu.Unlock()
	return t
}

func (t *fakeTimer) Stop() bool {
	t.ft.mu.Lock()
	defer t.ft.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	return true
}

// fire runs every timer neither fired nor stopped and returns their durations.
func (ft *fakeTimers) fire() []time.Duration {
	ft.mu.Lock()
	var due []*fakeTimer
	for _, t := range ft.timers {
		if !t.done {
			t.done = true
			due = append(due, t)
		}
	}
	ft.mu.Unlock()
	var ds []time.Duration
	for _, t := range due {
		t.f()
		ds = append(ds, t.d)
	}
	return ds
}

// withFakeTimers makes b's reload grace periods end only on ft.fire.
func withFakeTimers(b *Balancer) *fakeTimers {
	ft := &fakeTimers{}
	b.mu.Lock()
	b.afterFunc = ft.afterFunc
	b.mu.Unlock()
	return ft
}

func reconfigure(t testing.TB, b *Balancer, opts Options, grace time.Duration) {
	t.Helper()
	if err := b.Reconfigure(opts, grace); err != nil {
		t.Fatalf("Reconfigure: %v", err)
	}
}

// A reload that replaces a pool's backends: connections opened before keep
// their backend and keep relaying until the grace ends, then the one on a
// removed backend is closed and the one on a backend that stays goes on.
// New connections reach only the pool's new backends.
func TestReloadReplacingBackendsKeepsLiveConnectionsUntilGraceEnds(t *testing.T) {
	old, stays := startBackend(t, namedEcho("old")), startBackend(t, namedEcho("stays"))
	new1, new2 := startBackend(t, namedEcho("new1")), startBackend(t, namedEcho("new2"))
	fe := FrontendConfig{Name: "fe", Listen: "127.0.0.1:0", Pool: "p"}
	pc := poolOf("round_robin", old, stays)
	b, reg := startWith(t, Options{Frontends: []FrontendConfig{fe}, Pools: []PoolConfig{pc}})
	timers := withFakeTimers(b)
	onOld, onOldR, name := greeting(t, b)
	if name != "old" {
		t.Fatalf("first connection reached %s", name)
	}
	onStays, onStaysR, name := greeting(t, b)
	if name != "stays" {
		t.Fatalf("second connection reached %s", name)
	}

	next := poolOf("round_robin", stays, new1, new2)
	next.Backends[0].Health = pc.Backends[1].Health // health keeps its record of a backend that stays
	const grace = 42 * time.Second
	reconfigure(t, b, Options{Frontends: []FrontendConfig{fe}, Pools: []PoolConfig{next}}, grace)

	seen := map[string]int{}
	for range 6 {
		c, _, name := greeting(t, b)
		seen[name]++
		_ = c.Close()
	}
	if seen["old"] != 0 || seen["new1"] == 0 || seen["new2"] == 0 {
		t.Fatalf("new connections after the reload reached %v, want only stays, new1 and new2", seen)
	}
	echo(t, onOld, onOldR, "on a removed backend, in its grace")
	echo(t, onStays, onStaysR, "on a backend that stays")
	st := b.Status()
	if len(st) != 1 || len(st[0].Backends) != 3 || st[0].Backends[0].Address != stays {
		t.Fatalf("status %+v", st)
	}
	waitFor(t, func() bool { return b.Status()[0].Backends[0].ActiveConnections == 1 }) // the closed ones have ended
	if got := b.Status()[0].Backends[0]; got.TotalConnections != uint64(1+seen["stays"]) || got.ActiveConnections != 1 {
		t.Fatalf("the backend that stayed shows %+v: want its counters carried over (1 + %d total, 1 active)", got, seen["stays"])
	}
	for _, name := range []string{"vipd_backend_connections_total", "vipd_backend_connect_duration_seconds", "vipd_backend_healthy"} {
		if hasSeries(t, reg, name, map[string]string{"pool": "p", "backend": old}) {
			t.Errorf("%s still has a series for the removed backend", name)
		}
	}

	if ds := timers.fire(); len(ds) != 1 || ds[0] != grace {
		t.Fatalf("grace timers %v, want one of %s", ds, grace)
	}
	expectClosed(t, onOld)
	echo(t, onStays, onStaysR, "after the grace")
}

// loadStats counts the outcomes of a load generator's connections.
type loadStats struct {
	ok, refused, reset, short, other atomic.Int64

	mu    sync.Mutex
	first []string // guarded by mu: the first few failures, for the report
}

func (s *loadStats) fail(kind *atomic.Int64, format string, args ...any) {
	kind.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.first) < 5 {
		s.first = append(s.first, fmt.Sprintf(format, args...))
	}
}

func (s *loadStats) failures() int64 {
	return s.refused.Load() + s.reset.Load() + s.short.Load() + s.other.Load()
}

func (s *loadStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("ok %d, refused %d, reset %d, short answers %d, other %d; first failures %q",
		s.ok.Load(), s.refused.Load(), s.reset.Load(), s.short.Load(), s.other.Load(), s.first)
}

// classify counts err as a reset, an early end of the answer, or other.
func (s *loadStats) classify(step string, err error) {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		s.fail(&s.reset, "%s: %v", step, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		s.fail(&s.short, "%s: %v", step, err)
	default:
		s.fail(&s.other, "%s: %v", step, err)
	}
}

// oneConnection opens a connection to addr, reads the backend's greeting
// (a name in names), sends a line and checks the echo.
func (s *loadStats) oneConnection(addr string, names map[string]bool) {
	nc, err := net.DialTimeout("tcp", addr, ioWait)
	if errors.Is(err, syscall.ECONNREFUSED) {
		s.fail(&s.refused, "dial: %v", err)
		return
	}
	if err != nil {
		s.classify("dial", err)
		return
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(ioWait))
	r := bufio.NewReader(nc)
	name, err := r.ReadString('\n')
	if err != nil {
		s.classify("greeting", err)
		return
	}
	if !names[strings.TrimSpace(name)] {
		s.fail(&s.other, "greeting from %q", name)
		return
	}
	if _, err := io.WriteString(nc, "ping\n"); err != nil {
		s.classify("write", err)
		return
	}
	if line, err := r.ReadString('\n'); err != nil {
		s.classify("echo", err)
		return
	} else if line != "ping\n" {
		s.fail(&s.short, "echo %q", line)
		return
	}
	s.ok.Add(1)
}

// loadGen opens connections from several goroutines as fast as they can,
// until it has made n or is halted.
type loadGen struct {
	stats loadStats
	made  atomic.Int64 // connections begun
	n     int64
	stop  chan struct{}
	wg    sync.WaitGroup
	start time.Time
}

func startLoad(addr string, names map[string]bool, workers int, n int64) *loadGen {
	g := &loadGen{n: n, stop: make(chan struct{}), start: time.Now()}
	for range workers {
		g.wg.Go(func() {
			for g.made.Add(1) <= n {
				select {
				case <-g.stop:
					return
				default:
				}
				g.stats.oneConnection(addr, names)
			}
		})
	}
	return g
}

// running reports whether connections are still being begun.
func (g *loadGen) running() bool { return g.made.Load() < g.n }

// wait waits for the workers and returns the rate of finished connections.
func (g *loadGen) wait() float64 {
	g.wg.Wait()
	return float64(g.stats.ok.Load()+g.stats.failures()) / time.Since(g.start).Seconds()
}

// New connections as fast as several goroutines can open them, while the
// pool the frontend feeds changes backends, weights and algorithm, the
// frontend's limits change, and another frontend comes and goes: not one
// is refused or reset, every one gets its whole answer. The rates without
// reloads, with ten, while reloading back to back, and without again (the
// drift of a shared machine) are logged.
func TestReloadsUnderLoadRefuseAndResetNothing(t *testing.T) {
	s1, s2, s3 := startBackend(t, namedEcho("s1")), startBackend(t, namedEcho("s2")), startBackend(t, namedEcho("s3"))
	names := map[string]bool{"s1": true, "s2": true, "s3": true}
	addr := deadAddr(t) // a fixed port: a listener bound again would take the same address
	configs := [2]Options{{
		Frontends: []FrontendConfig{{Name: "fe", Listen: addr, Pool: "p"}, {Name: "extra", Listen: "127.0.0.1:0", Pool: "p"}},
		Pools:     []PoolConfig{poolOf("round_robin", s1, s2)},
	}, {
		Frontends: []FrontendConfig{{Name: "fe", Listen: addr, Pool: "p", MaxConnections: 10000}},
		Pools:     []PoolConfig{poolOf("least_conn", s2, s3)},
	}}
	configs[1].Pools[0].Backends[0].Weight = 3
	b, reg := startWith(t, configs[0])
	reloads := 0
	reload := func() {
		reloads++
		reconfigure(t, b, configs[reloads%2], ioWait) // long enough for every connection to end on its own
		if reloads%2 == 0 {
			c, r, _ := greetingAt(t, b.Addr("extra").String())
			echo(t, c, r, "through the frontend added back")
			_ = c.Close()
		}
	}
	const workers, perPhase = 4, 1500
	var failed []string
	check := func(phase string, g *loadGen, rate float64) {
		t.Logf("%s: %.0f connections/s, %s", phase, rate, &g.stats)
		if g.stats.failures() != 0 || g.stats.ok.Load() != perPhase {
			failed = append(failed, phase)
		}
	}

	g := startLoad(addr, names, workers, perPhase)
	check("without reloads", g, g.wait())

	g = startLoad(addr, names, workers, perPhase)
	for i := int64(1); i <= 10; i++ {
		waitFor(t, func() bool { return g.made.Load() >= i*perPhase/11 })
		reload()
	}
	check("with 10 reloads", g, g.wait())

	g = startLoad(addr, names, workers, perPhase)
	before := reloads
	for g.running() {
		reload()
		_ = b.Status() // what the admin API and a scrape read meanwhile
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	rate := g.wait()
	check(fmt.Sprintf("with %d reloads back to back", reloads-before), g, rate)
	g = startLoad(addr, names, workers, perPhase)
	check("without reloads again", g, g.wait())
	if failed != nil {
		t.Fatalf("connections failed %v", failed)
	}
}

// A set that fails validation, or a new listener that cannot be bound, is
// rejected whole: the error names what is wrong and the running layout, its
// listeners and its status stay as they were.
func TestBadReconfigureChangesNothing(t *testing.T) {
	a := startBackend(t, namedEcho("a"))
	pc := poolOf("round_robin", a)
	base := func() Options {
		p := pc
		p.Backends = append([]BackendConfig(nil), pc.Backends...)
		return Options{Frontends: []FrontendConfig{{Name: "fe", Listen: "127.0.0.1:0", Pool: "p"}}, Pools: []PoolConfig{p}}
	}
	b, reg := startWith(t, base())
	running, ln, before := b.layout.Load(), b.layout.Load().frontends[0].ln, b.Status()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := deadAddr(t)

	cases := map[string]struct {
		change func(*Options)
		grace  time.Duration
		names  []string // what the error must name
	}{
		"unknown pool in a frontend": {func(o *Options) {
			o.Frontends = append(o.Frontends, FrontendConfig{Name: "new", Listen: free, Pool: "nope"})
		}, time.Second, []string{`"new"`, `"nope"`}},
		"bad algorithm": {func(o *Options) { o.Pools[0].Algorithm = "fastest" }, time.Second, []string{`"p"`, "fastest"}},
		"duplicate pool": {func(o *Options) {
			o.Pools = append(o.Pools, o.Pools[0])
		}, time.Second, []string{`"p"`, "twice"}},
		"duplicate frontend": {func(o *Options) {
			o.Frontends = append(o.Frontends, FrontendConfig{Name: "fe", Listen: free, Pool: "p"})
		}, time.Second, []string{`"fe"`, "twice"}},
		"health record missing": {func(o *Options) {
			o.Pools[0].Backends = append(o.Pools[0].Backends, BackendConfig{Address: "127.0.0.1:9", Weight: 1})
		}, time.Second, []string{"127.0.0.1:9", "Health"}},
		"negative weight": {func(o *Options) { o.Pools[0].Backends[0].Weight = -1 }, time.Second, []string{a, "weight"}},
		"address in use": {func(o *Options) {
			o.Frontends = append(o.Frontends, FrontendConfig{Name: "bound-first", Listen: free, Pool: "p"},
				FrontendConfig{Name: "taken", Listen: taken.Addr().String(), Pool: "p"})
		}, time.Second, []string{`"taken"`, "in use"}},
		"negative grace": {func(o *Options) { o.Pools[0].Algorithm = "least_conn" }, -time.Second, []string{"grace"}},
	}
	for name, tc := range cases {
		o := base()
		tc.change(&o)
		err := b.Reconfigure(o, tc.grace)
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
		if b.layout.Load() != running || b.layout.Load().frontends[0].ln != ln {
			t.Fatalf("%s: the running layout or its listener changed", name)
		}
		if after := b.Status(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("%s: status %+v, was %+v", name, after, before)
		}
	}
	// The listener bound before the taken address failed was closed again.
	if l, err := net.Listen("tcp", free); err != nil {
		t.Fatalf("the address of a frontend of a rejected set is still bound: %v", err)
	} else {
		_ = l.Close()
	}
	if hasSeries(t, reg, "vipd_frontend_connections_total", map[string]string{"frontend": "bound-first"}) {
		t.Fatal("a frontend of a rejected set has a series")
	}
	c, r, _ := greeting(t, b)
	echo(t, c, r, "still served")
}

// A removed frontend refuses new connections at once, while the connection
// it accepted before goes on for the grace and is then closed.
func TestRemovedFrontendStopsAcceptingAndDrainsItsConnection(t *testing.T) {
	a := startBackend(t, namedEcho("a"))
	pools := []PoolConfig{poolOf("round_robin", a)}
	fe := FrontendConfig{Name: "fe", Listen: "127.0.0.1:0", Pool: "p"}
	gone := FrontendConfig{Name: "gone", Listen: "127.0.0.1:0", Pool: "p"}
	b, reg := startWith(t, Options{Frontends: []FrontendConfig{fe, gone}, Pools: pools})
	timers := withFakeTimers(b)
	goneAddr := b.Addr("gone").String()
	goneFE := b.layout.Load().frontends[1]
	c, r, _ := greetingAt(t, goneAddr)

	reconfigure(t, b, Options{Frontends: []FrontendConfig{fe}, Pools: pools}, time.Minute)
	if nc, err := net.Dial("tcp", goneAddr); !errors.Is(err, syscall.ECONNREFUSED) {
		if err == nil {
			_ = nc.Close()
		}
		t.Fatalf("dial the removed frontend: %v, want connection refused", err)
	}
	if b.Addr("gone") != nil {
		t.Fatal("the removed frontend still has an address")
	}
	if hasSeries(t, reg, "vipd_frontend_connections_total", map[string]string{"frontend": "gone"}) {
		t.Fatal("the removed frontend still has a series")
	}
	echo(t, c, r, "draining")
	timers.fire()
	expectClosed(t, c)
	select {
	case <-goneFE.served: // its accept loop ended
	case <-time.After(ioWait):
		t.Fatal("the removed frontend's accept loop still runs")
	}
	kept, keptR, _ := greeting(t, b)
	echo(t, kept, keptR, "the frontend that stays")
}

// A frontend whose pool and limits change keeps its listener; the new
// values apply to the connections it accepts from then on.
func TestFrontendPoolAndLimitsChangeInPlace(t *testing.T) {
	a, q := startBackend(t, namedEcho("a")), startBackend(t, namedEcho("q"))
	qPool := poolOf("round_robin", q)
	qPool.Name = "q"
	pools := []PoolConfig{poolOf("round_robin", a), qPool}
	fe := FrontendConfig{Name: "fe", Listen: "127.0.0.1:0", Pool: "p"}
	b, reg := startWith(t, Options{Frontends: []FrontendConfig{fe}, Pools: pools})
	f, ln := b.layout.Load().frontends[0], b.layout.Load().frontends[0].ln
	c1, r1, _ := greeting(t, b)
	c2, r2, _ := greeting(t, b)

	fe.MaxConnections, fe.Pool = 2, "q"
	reconfigure(t, b, Options{Frontends: []FrontendConfig{fe}, Pools: pools}, time.Minute)
	if got := b.layout.Load().frontends[0]; got != f || got.ln != ln {
		t.Fatal("the frontend or its listener was replaced")
	}
	expectRefused(t, b) // a third connection, over the new limit of 2
	if n := metricValue(t, reg, "vipd_frontend_refused_connections_total", map[string]string{"frontend": "fe", "reason": "max_connections"}); n != 1 {
		t.Fatalf("refused max_connections %v, want 1", n)
	}
	echo(t, c1, r1, "still on a")
	echo(t, c2, r2, "also on a")
	_ = c1.Close()
	waitFor(t, func() bool { return f.active.Load() == 1 })
	if _, _, name := greeting(t, b); name != "q" {
		t.Fatalf("a new connection reached %s, want the frontend's new pool q", name)
	}
}

// A backend that stays keeps its operator drain and its counters through
// a reload that changes its weight and the pool's algorithm.
func TestReloadKeepsDrainMarkOfBackendsThatStay(t *testing.T) {
	a, c := startBackend(t, namedEcho("a")), startBackend(t, namedEcho("c"))
	pc := poolOf("round_robin", a, c)
	fe := FrontendConfig{Name: "fe", Listen: "127.0.0.1:0", Pool: "p"}
	b, _ := startWith(t, Options{Frontends: []FrontendConfig{fe}, Pools: []PoolConfig{pc}})
	allReach(t, b, 1, "a")
	if err := b.SetDrained("p", a, true); err != nil {
		t.Fatal(err)
	}
	next := pc
	next.Algorithm = "least_conn"
	next.Backends = []BackendConfig{{Address: a, Weight: 5, Health: pc.Backends[0].Health}, pc.Backends[1]}
	reconfigure(t, b, Options{Frontends: []FrontendConfig{fe}, Pools: []PoolConfig{next}}, time.Minute)
	if st := b.Status()[0].Backends[0]; !st.Drained || st.Weight != 5 || st.TotalConnections != 1 {
		t.Fatalf("status %+v, want drained, weight 5, 1 connection so far", st)
	}
	allReach(t, b, 4, "c")
}

// Before Start, Reconfigure only replaces what Start will bind; after
// Shutdown it is refused.
func TestReconfigureBeforeStartAndAfterShutdown(t *testing.T) {
	a := startBackend(t, namedEcho("a"))
	pools := []PoolConfig{poolOf("round_robin", a)}
	b, err := New(Options{Frontends: []FrontendConfig{{Name: "fe", Listen: "127.0.0.1:0", Pool: "p"}}, Pools: pools})
	if err != nil {
		t.Fatal(err)
	}
	reconfigure(t, b, Options{Frontends: []FrontendConfig{{Name: "two", Listen: "127.0.0.1:0", Pool: "p"}}, Pools: pools}, time.Minute)
	if b.Addr("two") != nil {
		t.Fatal("bound before Start")
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if b.Addr("fe") != nil {
		t.Fatal("the frontend replaced before Start was bound")
	}
	c, r, _ := greetingAt(t, b.Addr("two").String())
	echo(t, c, r, "through the frontend given before Start")
	_ = c.Close()
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Reconfigure(Options{Pools: pools}, 0); err == nil {
		t.Fatal("Reconfigure after Shutdown accepted")
	}
}

// Shutdown does not wait out a reload's grace: the connections of removed
// backends get Shutdown's own, and the timer is stopped.
func TestShutdownEndsAReloadGraceEarly(t *testing.T) {
	a, c := startBackend(t, namedEcho("a")), startBackend(t, namedEcho("c"))
	fe := FrontendConfig{Name: "fe", Listen: "127.0.0.1:0", Pool: "p"}
	b, err := New(Options{Frontends: []FrontendConfig{fe}, Pools: []PoolConfig{poolOf("round_robin", a)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	conn, r, _ := greeting(t, b)
	reconfigure(t, b, Options{Frontends: []FrontendConfig{fe}, Pools: []PoolConfig{poolOf("round_robin", c)}}, time.Hour)
	echo(t, conn, r, "in the reload's grace")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a connection in a reload's grace: %v, want its own deadline exceeded", err)
	}
	expectClosed(t, conn)
	b.mu.Lock()
	left := len(b.retiring)
	b.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d retirements left after Shutdown", left)
	}
}

// A pool's PROXY protocol setting changes for the connections opened after
// the reload; one opened before keeps what it had.
func TestReloadChangesProxyProtocolForNewConnections(t *testing.T) {
	be := startBackend(t, func(c *net.TCPConn) {
		r := bufio.NewReader(c)
		got := "none"
		if h, err := proxyproto.Read(r); err == nil {
			got = fmt.Sprintf("v%d", h.Version)
		} else if !errors.Is(err, proxyproto.ErrNoProxyProtocol) {
			return
		}
		if _, err := io.WriteString(c, got+"\n"); err != nil {
			return
		}
		_, _ = io.Copy(c, r)
	})
	fe := FrontendConfig{Name: "fe", Listen: "127.0.0.1:0", Pool: "p"}
	pc := poolOf("round_robin", be)
	b, _ := startWith(t, Options{Frontends: []FrontendConfig{fe}, Pools: []PoolConfig{pc}})
	before := dial(t, b)
	if _, err := io.WriteString(before, "x\n"); err != nil { // the backend reads before it greets
		t.Fatal(err)
	}
	beforeR := bufio.NewReader(before)
	if line, err := beforeR.ReadString('\n'); err != nil || line != "none\n" {
		t.Fatalf("before the reload: %q, %v", line, err)
	}
	pc.ProxyProtocol = "v2"
	reconfigure(t, b, Options{Frontends: []FrontendConfig{fe}, Pools: []PoolConfig{pc}}, time.Minute)
	after := dial(t, b)
	if _, err := io.WriteString(after, "x\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(after).ReadString('\n'); err != nil || line != "v2\n" {
		t.Fatalf("after the reload: %q, %v", line, err)
	}
	if line, err := beforeR.ReadString('\n'); err != nil || line != "x\n" {
		t.Fatalf("the connection from before the reload: %q, %v", line, err)
	}
}
