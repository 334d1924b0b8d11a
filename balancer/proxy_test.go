package balancer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

func TestRelaysRoundRobinAndCountsBytes(t *testing.T) {
	a := startBackend(t, namedEcho("a"))
	bAddr := startBackend(t, namedEcho("b"))
	b, reg := startBalancer(t, poolOf("round_robin", a, bAddr), FrontendConfig{}, nil)
	var names []string
	for range 4 {
		c, r, name := greeting(t, b)
		echo(t, c, r, "ping")
		_ = c.Close()
		names = append(names, name)
	}
	if got := strings.Join(names, ""); got != "abab" {
		t.Fatalf("backends %s, want abab", got)
	}
	// The exact counts are final once the last connection has ended.
	waitFor(t, func() bool { return b.Status()[0].Backends[1].ActiveConnections == 0 })
	lb := map[string]string{"pool": "p", "backend": bAddr}
	up := metricValue(t, reg, "vipd_backend_bytes_total", map[string]string{"pool": "p", "backend": bAddr, "direction": "client_to_backend"})
	down := metricValue(t, reg, "vipd_backend_bytes_total", map[string]string{"pool": "p", "backend": bAddr, "direction": "backend_to_client"})
	if up != 2*5 || down != 2*(2+5) { // "ping\n" each way, plus "b\n"
		t.Fatalf("bytes up %v down %v, want 10 and 14", up, down)
	}
	if st := b.Status()[0].Backends[1]; st.BytesClientToBackend != 10 || st.BytesBackendToClient != 14 {
		t.Fatalf("Status bytes up %d down %d, want 10 and 14 as in the metric", st.BytesClientToBackend, st.BytesBackendToClient)
	}
	if n := metricValue(t, reg, "vipd_backend_connections_total", lb); n != 2 {
		t.Fatalf("backend connections_total %v, want 2", n)
	}
	if n := metricValue(t, reg, "vipd_backend_connect_duration_seconds", lb); n != 2 {
		t.Fatalf("connect latency samples %v, want 2", n)
	}
	if n := metricValue(t, reg, "vipd_frontend_connections_total", map[string]string{"frontend": "fe"}); n != 4 {
		t.Fatalf("frontend connections_total %v, want 4", n)
	}
}

// waitFor polls cond (bounded by ioWait) for state that settles after a
// connection ends on the proxy side.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHalfCloseFromClientBackendStillAnswers(t *testing.T) {
	be := startBackend(t, func(c *net.TCPConn) {
		got, err := io.ReadAll(c) // until the client's half-close arrives
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "got:"+string(got))
	})
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	c := dial(t, b)
	if _, err := io.WriteString(c, "request"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "got:request" {
		t.Fatalf("reply %q, %v; want got:request", reply, err)
	}
}

func TestHalfCloseFromBackendClientStillSends(t *testing.T) {
	type lateRead struct {
		got string
		err error
	}
	late := make(chan lateRead, 1)
	be := startBackend(t, func(c *net.TCPConn) {
		if _, err := io.WriteString(c, "banner"); err != nil {
			return
		}
		if err := c.CloseWrite(); err != nil {
			return
		}
		got, err := io.ReadAll(c) // a clean FIN ends it, a reset fails it
		late <- lateRead{string(got), err}
	})
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	c := dial(t, b)
	banner, err := io.ReadAll(c) // EOF: the backend's half-close came through
	if err != nil || string(banner) != "banner" {
		t.Fatalf("banner %q, %v", banner, err)
	}
	if _, err := io.WriteString(c, "after-eof"); err != nil {
		t.Fatalf("write after the backend's half-close: %v", err)
	}
	_ = c.CloseWrite()
	select {
	case r := <-late:
		if r.got != "after-eof" || r.err != nil {
			t.Fatalf("backend read %q, %v after its half-close, want after-eof then EOF", r.got, r.err)
		}
	case <-time.After(ioWait):
		t.Fatal("backend never got the client's data")
	}
}

func TestRetriesNextBackendWhenConnectFails(t *testing.T) {
	dead := deadAddr(t)
	alive := startBackend(t, namedEcho("alive"))
	rec := newRecorder()
	b, reg := startBalancer(t, poolOf("round_robin", dead, alive), FrontendConfig{}, rec)
	for i := range 6 {
		c, r, name := greeting(t, b)
		if name != "alive" {
			t.Fatalf("connection %d reached %q", i, name)
		}
		echo(t, c, r, "x")
		_ = c.Close()
	}
	failed, _ := rec.counts(dead)
	_, ok := rec.counts(alive)
	if failed != 3 || ok != 6 {
		t.Fatalf("reported %d failures of the dead backend and %d successes of the live one, want 3 and 6", failed, ok)
	}
	if n := metricValue(t, reg, "vipd_backend_connect_errors_total", map[string]string{"pool": "p", "backend": dead}); n != 3 {
		t.Fatalf("connect_errors_total %v, want 3", n)
	}
}

func TestEveryBackendDeadTriesEachOnceThenCloses(t *testing.T) {
	d1, d2 := deadAddr(t), deadAddr(t)
	rec := newRecorder()
	b, reg := startBalancer(t, poolOf("least_conn", d1, d2), FrontendConfig{}, rec)
	expectRefused(t, b)
	f1, _ := rec.counts(d1)
	f2, _ := rec.counts(d2)
	if f1 != 1 || f2 != 1 {
		t.Fatalf("connect attempts %d and %d, want each backend tried once", f1, f2)
	}
	if n := metricValue(t, reg, "vipd_frontend_refused_connections_total", map[string]string{"frontend": "fe", "reason": "no_backend"}); n != 1 {
		t.Fatalf("refused no_backend %v, want 1", n)
	}
}

func TestNoBackendAvailableClosesAtOnce(t *testing.T) {
	rec := newRecorder()
	be := startBackend(t, namedEcho("a"))
	pc := poolOf("round_robin", be)
	pc.Backends[0].Health.(*testHealth).healthy.Store(false)
	b, reg := startBalancer(t, pc, FrontendConfig{}, rec)
	start := time.Now()
	expectRefused(t, b)
	t.Logf("client closed %s after dialling with no healthy backend", time.Since(start))
	if f, s := rec.counts(be); f+s != 0 {
		t.Fatal("an unhealthy backend was dialled")
	}
	if n := metricValue(t, reg, "vipd_frontend_refused_connections_total", map[string]string{"frontend": "fe", "reason": "no_backend"}); n != 1 {
		t.Fatalf("refused no_backend %v, want 1", n)
	}
}

func TestMaxConnectionsRefusesExcess(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	b, reg := startBalancer(t, poolOf("round_robin", be), FrontendConfig{MaxConnections: 2}, nil)
	c1, r1, _ := greeting(t, b)
	c2, r2, _ := greeting(t, b)
	expectRefused(t, b)
	refused := map[string]string{"frontend": "fe", "reason": "max_connections"}
	if n := metricValue(t, reg, "vipd_frontend_refused_connections_total", refused); n != 1 {
		t.Fatalf("refused max_connections %v, want 1", n)
	}
	echo(t, c1, r1, "still")
	echo(t, c2, r2, "here")
	// A slot frees when a connection ends.
	_ = c1.Close()
	waitFor(t, func() bool {
		return metricValue(t, reg, "vipd_frontend_active_connections", map[string]string{"frontend": "fe"}) == 1
	})
	c3, r3, _ := greeting(t, b)
	echo(t, c3, r3, "third")
}

func TestShutdownLetsLiveConnectionFinish(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	c, r, _ := greeting(t, b)
	addr := b.Addr("fe").String()

	done := make(chan error, 1)
	go func() { done <- b.Shutdown(context.Background()) }()
	waitFor(t, func() bool { // the listener is closed first
		nc, err := net.Dial("tcp", addr)
		if err == nil {
			_ = nc.Close()
		}
		return err != nil
	})
	echo(t, c, r, "during shutdown")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a connection was live", err)
	default:
	}
	_ = c.Close()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown after the last connection ended: %v", err)
	}
	// A second call with its grace already over has nothing left to cut.
	over, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Shutdown(over); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestShutdownClosesConnectionsBeyondGrace(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	c, r, _ := greeting(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := b.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a live connection past its grace: %v, want deadline exceeded", err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after the grace")
	}
	if _, err := io.WriteString(c, "late\n"); err == nil {
		if _, err := r.ReadString('\n'); err == nil {
			t.Fatal("connection still relays after the grace")
		}
	}
}

// An idle connection is closed once idle_timeout has passed without data
// either way, and not sooner: it is still open halfway through. Connections
// whose traffic goes either way are never idle. Nothing here bounds how
// late the close may come (that would measure speed, not behaviour); the
// idle-timeout counter proves it was the timeout that closed it.
func TestIdleTimeoutClosesIdleConnectionOnly(t *testing.T) {
	// The ticker backend talks on its own every 20ms: a conn whose only
	// traffic goes backend → client is active too.
	ticker := startBackend(t, func(c *net.TCPConn) {
		for { // until the test closes the conn
			if _, err := io.WriteString(c, "t\n"); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	echoAddr := startBackend(t, namedEcho("echo"))
	const idle = 400 * time.Millisecond
	fc := FrontendConfig{IdleTimeout: idle}
	echoBal, echoReg := startBalancer(t, poolOf("round_robin", echoAddr), fc, nil)
	tickBal, _ := startBalancer(t, poolOf("round_robin", ticker), fc, nil)
	idleTimeouts := func() float64 {
		return metricValue(t, echoReg, "vipd_frontend_idle_timeouts_total", map[string]string{"frontend": "fe"})
	}

	idleConn, idleR, _ := greeting(t, echoBal)
	chatty, chattyR, _ := greeting(t, echoBal)
	listener := dial(t, tickBal)
	// The proxy sees the idle conn's last data no earlier than this write,
	// so its idle period cannot end before lastData+idle.
	lastData := time.Now()
	echo(t, idleConn, idleR, "last words")

	_ = idleConn.SetReadDeadline(lastData.Add(idle / 2))
	if n, err := idleConn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle conn at half its idle_timeout: read %d bytes, %v; want it still open", n, err)
	}
	if n := idleTimeouts(); n != 0 {
		t.Fatalf("%v idle timeouts counted before any conn was idle for idle_timeout", n)
	}

	// Three idle periods: the chatty conn pings every 20ms, the listener
	// only receives. Meanwhile the idle conn must be closed.
	lr := bufio.NewReader(listener)
	for time.Since(lastData) < 3*idle {
		echo(t, chatty, chattyR, "ping")
		if line, err := lr.ReadString('\n'); err != nil || line != "t\n" {
			t.Fatalf("receive-only conn: %q, %v", line, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = idleConn.SetReadDeadline(time.Now().Add(ioWait))
	expectClosed(t, idleConn)
	waitFor(t, func() bool { return idleTimeouts() >= 1 })
	echo(t, chatty, chattyR, "still open")
	if n := idleTimeouts(); n != 1 {
		t.Fatalf("%v idle timeouts, want exactly the idle conn's", n)
	}
}

func TestProxyProtocolHeaderCarriesClientAddress(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			headers := make(chan *proxyproto.Header, 1)
			be := startBackend(t, func(c *net.TCPConn) {
				r := bufio.NewReader(c)
				h, err := proxyproto.Read(r)
				if err != nil {
					t.Errorf("read PROXY header: %v", err)
					return
				}
				headers <- h
				payload, _ := r.ReadString('\n')
				_, _ = io.WriteString(c, "payload:"+payload)
			})
			pc := poolOf("round_robin", be)
			pc.ProxyProtocol = version
			b, _ := startBalancer(t, pc, FrontendConfig{}, nil)
			c := dial(t, b)
			if _, err := io.WriteString(c, "hello\n"); err != nil {
				t.Fatal(err)
			}
			h := <-headers
			if want := map[string]byte{"v1": 1, "v2": 2}[version]; h.Version != want {
				t.Fatalf("header version %d, want %d", h.Version, want)
			}
			src, dst, ok := h.TCPAddrs()
			if !ok {
				t.Fatalf("header carries no TCP addresses: %+v", h)
			}
			if src.String() != c.LocalAddr().String() || dst.String() != b.Addr("fe").String() {
				t.Fatalf("header %s → %s, want client %s → frontend %s", src, dst, c.LocalAddr(), b.Addr("fe"))
			}
			reply, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || reply != "payload:hello\n" {
				t.Fatalf("reply %q, %v", reply, err)
			}
		})
	}
}

// TestLiveConnectionBytesCountWhileItRuns keeps one connection open after an
// exchange: its bytes show in vipd_backend_bytes_total while it runs (what
// the peers acknowledged, less the PROXY header and TCP's SYN and FIN
// sequence numbers), every sample taken
// meanwhile is at most the next one, and closing it leaves exactly the
// relayed counts, nothing counted twice.
func TestLiveConnectionBytesCountWhileItRuns(t *testing.T) {
	for _, version := range []string{"none", "v2"} {
		t.Run(version, func(t *testing.T) {
			be := startBackend(t, func(c *net.TCPConn) {
				r := bufio.NewReader(c)
				if version != "none" {
					if _, err := proxyproto.Read(r); err != nil {
						t.Errorf("read PROXY header: %v", err)
						return
					}
				}
				_, _ = io.Copy(c, r) // echo
			})
			pc := poolOf("round_robin", be)
			pc.ProxyProtocol = version
			b, reg := startBalancer(t, pc, FrontendConfig{}, nil)
			bytes := func(dir string) float64 {
				return metricValue(t, reg, "vipd_backend_bytes_total", map[string]string{"pool": "p", "backend": be, "direction": dir})
			}
			var samples [][2]float64
			sample := func() { samples = append(samples, [2]float64{bytes("client_to_backend"), bytes("backend_to_client")}) }

			const chunk, chunks = 64 << 10, 8
			c := dial(t, b)
			buf := make([]byte, chunk)
			for range chunks {
				if _, err := c.Write(buf); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Fatal(err)
				}
				sample()
			}
			const total = chunk * chunks
			waitFor(t, func() bool { // up to seqControl bytes under, while open
				sample()
				last := samples[len(samples)-1]
				return last[0] >= total-seqControl && last[1] >= total-seqControl
			})
			if n := b.Status()[0].Backends[0].ActiveConnections; n != 1 {
				t.Fatalf("%d active connections, want the one still open", n)
			}
			_ = c.Close()
			waitFor(t, func() bool { return b.Status()[0].Backends[0].ActiveConnections == 0 })
			sample()
			for i, s := range samples {
				if s[0] > total || s[1] > total || (i > 0 && (s[0] < samples[i-1][0] || s[1] < samples[i-1][1])) {
					t.Fatalf("sample %d of %d is %v after %v: the counter went back or beyond the %d bytes relayed",
						i, len(samples), s, samples[max(i-1, 0)], total)
				}
			}
			if last := samples[len(samples)-1]; last != [2]float64{total, total} {
				t.Fatalf("after the close: %v, want %d each way", last, total)
			}
		})
	}
}

func TestDrainedBackendGetsNoNewConnectionsLiveOneContinues(t *testing.T) {
	a := startBackend(t, namedEcho("a"))
	bAddr := startBackend(t, namedEcho("b"))
	b, _ := startBalancer(t, poolOf("round_robin", a, bAddr), FrontendConfig{}, nil)
	live, liveR, name := greeting(t, b)
	if name != "a" {
		t.Fatalf("first connection reached %s, want a", name)
	}
	if err := b.SetDrained("p", a, true); err != nil {
		t.Fatal(err)
	}
	allReach(t, b, 4, "b")
	echo(t, live, liveR, "live on drained backend")
	st := b.Status()[0].Backends[0]
	if !st.Drained || st.ActiveConnections != 1 || st.TotalConnections != 1 {
		t.Fatalf("status of the drained backend %+v, want drained with 1 active, 1 total", st)
	}
	if err := b.SetDrained("p", a, false); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 2 {
		c, _, name := greeting(t, b)
		seen[name] = true
		_ = c.Close()
	}
	if !seen["a"] {
		t.Fatal("undrained backend gets no connections")
	}
}

// The balancer keeps no copy of health: whatever the backend's Health says
// at pick time is what the proxy, Status and the metric show.
func TestBalancerAsksHealthAtEveryPick(t *testing.T) {
	a := startBackend(t, namedEcho("a"))
	bAddr := startBackend(t, namedEcho("b"))
	pc := poolOf("least_conn", a, bAddr)
	bHealth := pc.Backends[1].Health.(*testHealth)
	b, reg := startBalancer(t, pc, FrontendConfig{}, nil)
	healthyGauge := func() float64 {
		return metricValue(t, reg, "vipd_backend_healthy", map[string]string{"pool": "p", "backend": bAddr})
	}
	bHealth.healthy.Store(false)
	allReach(t, b, 4, "a")
	if st := b.Status()[0].Backends[1]; st.Healthy || healthyGauge() != 0 {
		t.Fatalf("status %+v, gauge %v; want unhealthy", st, healthyGauge())
	}
	bHealth.healthy.Store(true)
	seen := map[string]bool{}
	for range 4 {
		c, _, name := greeting(t, b)
		seen[name] = true
		_ = c.Close()
	}
	if !seen["b"] || !b.Status()[0].Backends[1].Healthy || healthyGauge() != 1 {
		t.Fatalf("backend b healthy again but reached %v, status %+v, gauge %v", seen, b.Status()[0].Backends[1], healthyGauge())
	}
	if err := b.SetDrained("nopool", a, true); err == nil {
		t.Fatal("SetDrained accepted an unknown pool")
	}
}

func TestListenerBindsAddressNotOnHost(t *testing.T) {
	// 198.18.255.254 is on no interface of this host: IP_FREEBIND lets the
	// frontend bind it before the VIP arrives. Nothing is sent to it.
	const vip = "198.18.255.254:0"
	if ln, err := net.Listen("tcp", vip); err == nil {
		_ = ln.Close()
		t.Skipf("%s is local here, the test proves nothing", vip)
	}
	b, err := New(Options{
		Pools:     []PoolConfig{poolOf("round_robin")},
		Frontends: []FrontendConfig{{Name: "vip", Listen: vip, Pool: "p"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("bind a non-local address: %v", err)
	}
	t.Logf("bound %s", b.Addr("vip"))
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestListenerBindsIPv6WithFreebind(t *testing.T) {
	// Exercises the IPV6_FREEBIND branch; only binds, sends nothing.
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		_ = ln.Close()
	}
	b, err := New(Options{
		Pools:     []PoolConfig{poolOf("round_robin")},
		Frontends: []FrontendConfig{{Name: "v6", Listen: "[::1]:0", Pool: "p"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("bound %s", b.Addr("v6"))
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestStartFailsCleanlyWhenAddressTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err := New(Options{
		Pools: []PoolConfig{poolOf("round_robin")},
		Frontends: []FrontendConfig{{Name: "free", Listen: "127.0.0.1:0", Pool: "p"},
			{Name: "taken", Listen: ln.Addr().String(), Pool: "p"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err == nil {
		t.Fatal("Start bound an address already in use")
	} else {
		t.Logf("start: %v", err)
	}
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// blackhole returns a 127.0.0.1 port whose accept queue is full, so the
// kernel drops further SYNs and a connect hangs until its timeout.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil { // a queue of one
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 2 { // fill the queue; never accepted
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	return addr
}

func TestConnectTimeoutMovesToNextBackend(t *testing.T) {
	hole := blackhole(t)
	alive := startBackend(t, namedEcho("alive"))
	rec := newRecorder()
	pc := poolOf("round_robin", hole, alive)
	pc.ConnectTimeout = 200 * time.Millisecond
	b, _ := startBalancer(t, pc, FrontendConfig{}, rec)
	start := time.Now()
	_, _, name := greeting(t, b) // round robin tries the black hole first
	t.Logf("client answered %s after a connect timeout of %s", time.Since(start), pc.ConnectTimeout)
	if name != "alive" {
		t.Fatalf("reached %q", name)
	}
	if failed, _ := rec.counts(hole); failed != 1 {
		t.Fatalf("black-holed backend reported %d failures, want 1", failed)
	}
}

func TestWorkerServesNextConnectionAndEndsAtShutdown(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	f := b.layout.Load().frontends[0]
	c1, r1, _ := greeting(t, b)
	echo(t, c1, r1, "first")
	_ = c1.Close()
	waitFor(t, func() bool { return f.idleWorkers.Load() == 1 })
	// The worker hands the relay to two goroutines of its own and waits
	// again; a second worker for c2 would leave two waiting once c2 ends.
	c2, r2, _ := greeting(t, b)
	echo(t, c2, r2, "second")
	_ = c2.Close()
	waitFor(t, func() bool { return f.active.Load() == 0 && f.idleWorkers.Load() >= 1 })
	if n := f.idleWorkers.Load(); n != 1 {
		t.Fatalf("%d idle workers after the second connection, want 1: the idle one takes it", n)
	}
	if err := b.Shutdown(context.Background()); err != nil { // waits for the idle worker
		t.Fatalf("Shutdown: %v", err)
	}
	if n := f.idleWorkers.Load(); n != 0 {
		t.Fatalf("%d idle workers after Shutdown, want 0", n)
	}
}

// allReach makes n connections and fails unless every one reaches the
// backend named want.
func allReach(t *testing.T, b *Balancer, n int, want string) {
	t.Helper()
	for i := range n {
		c, _, name := greeting(t, b)
		_ = c.Close()
		if name != want {
			t.Fatalf("connection %d reached %s, want only %s", i, name, want)
		}
	}
}
