package balancer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ioWait bounds every blocking test read so a broken proxy fails the test
// instead of hanging it; it is not a timing assertion.
const ioWait = 10 * time.Second

// startBackend serves handle on 127.0.0.1:0 until the test ends, then closes
// the listener and every open conn and waits for the handlers.
func startBackend(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				// EMFILE while a test cuts the file table: Linux allocates
				// the descriptor before it waits, so an idle accept fails
				// too. A real server retries; so does this one.
				time.Sleep(5 * time.Millisecond)
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(ioWait))
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// namedEcho greets with its name on a line, then echoes.
func namedEcho(name string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	}
}

// deadAddr returns a 127.0.0.1 port nothing listens on.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// startBalancer runs a Balancer with one frontend "fe" on 127.0.0.1:0 in
// front of pool "p"; it is shut down when the test ends.
func startBalancer(t testing.TB, pc PoolConfig, fc FrontendConfig, reporter ConnectReporter) (*Balancer, *prometheus.Registry) {
	t.Helper()
	pc.Name = "p"
	fc.Name, fc.Listen, fc.Pool = "fe", "127.0.0.1:0", "p"
	return startWith(t, Options{Frontends: []FrontendConfig{fc}, Pools: []PoolConfig{pc}, Reporter: reporter})
}

// startWith runs a Balancer built from opts with a registry and a test
// logger of its own; it is shut down when the test ends.
func startWith(t testing.TB, opts Options) (*Balancer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Logger = zaptest.NewLogger(t) // debug: the per-connection line runs too
	if _, bench := t.(*testing.B); bench {
		opts.Logger = zap.NewNop()
	}
	opts.Registerer = reg
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioWait)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return b, reg
}

// poolOf is a pool of healthy backends of weight 1 named p (startBalancer
// names it too).
func poolOf(algo string, addrs ...string) PoolConfig {
	pc := PoolConfig{Name: "p", Algorithm: algo, ConnectTimeout: time.Second, ProxyProtocol: "none"}
	for _, a := range addrs {
		pc.Backends = append(pc.Backends, BackendConfig{Address: a, Weight: 1, Health: healthyFromStart()})
	}
	return pc
}

// testHealth is a Health the test sets by hand, standing in for the
// health checker's record of a backend.
type testHealth struct {
	healthy atomic.Bool
	since   atomic.Int64 // unix nanos of the last turn up; 0 = healthy from the start
}

var _ Health = (*testHealth)(nil)

func healthyFromStart() *testHealth {
	h := &testHealth{}
	h.healthy.Store(true)
	return h
}

func (h *testHealth) Healthy() bool { return h.healthy.Load() }

func (h *testHealth) HealthySince() time.Time {
	if n := h.since.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// turnUp makes the backend healthy as of at.
func (h *testHealth) turnUp(at time.Time) {
	h.since.Store(at.UnixNano())
	h.healthy.Store(true)
}

// setHealthy sets the testHealth behind be.
func setHealthy(be *backend, healthy bool) { be.health.(*testHealth).healthy.Store(healthy) }

func dial(t testing.TB, b *Balancer) *net.TCPConn {
	t.Helper()
	return dialAddr(t, b.Addr("fe").String())
}

// dialAddr connects to addr; the conn is closed when the test ends.
func dialAddr(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(ioWait))
	return c.(*net.TCPConn)
}

// greeting dials through the proxy and returns the conn, its reader and the
// name of the backend that answered.
func greeting(t testing.TB, b *Balancer) (*net.TCPConn, *bufio.Reader, string) {
	t.Helper()
	return greetingAt(t, b.Addr("fe").String())
}

// greetingAt is greeting through the frontend at addr.
func greetingAt(t testing.TB, addr string) (*net.TCPConn, *bufio.Reader, string) {
	t.Helper()
	c := dialAddr(t, addr)
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	return c, r, strings.TrimSpace(line)
}

// echo sends msg and checks it comes back.
func echo(t testing.TB, c *net.TCPConn, r *bufio.Reader, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Fatalf("echo %q: got %q, %v", msg, got, err)
	}
}

// expectClosed checks the proxy closed c: a read ends with EOF or a reset.
func expectClosed(t testing.TB, c net.Conn) {
	t.Helper()
	n, err := c.Read(make([]byte, 64))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("conn still open: read %d bytes, err %v", n, err)
	}
}

// expectRefused dials the frontend and checks the proxy closes the conn at
// once. On loopback the RST can beat the handshake's end, so the dial
// itself may fail with a reset.
func expectRefused(t testing.TB, b *Balancer) {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr("fe").String())
	if err != nil {
		t.Logf("dial refused: %v", err)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ioWait))
	expectClosed(t, c)
}

// metricValue gathers reg and returns the value of the series name{labels}.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	m := findSeries(t, reg, name, labels)
	switch {
	case m == nil:
		t.Fatalf("no series %s%v", name, labels)
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("series %s%v is neither counter, gauge nor histogram", name, labels)
	return 0
}

// hasSeries reports whether reg exports a series name with these labels.
func hasSeries(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) bool {
	t.Helper()
	return findSeries(t, reg, name, labels) != nil
}

// findSeries gathers reg and returns the first series name whose labels
// include these, nil when there is none.
func findSeries(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				return m
			}
		}
	}
	return nil
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// recorder is a ConnectReporter that counts outcomes per backend.
type recorder struct {
	mu        sync.Mutex
	failed    map[string]int
	succeeded map[string]int
}

func newRecorder() *recorder {
	return &recorder{failed: map[string]int{}, succeeded: map[string]int{}}
}

func (r *recorder) ConnectFailed(pool, backend string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed[pool+"/"+backend]++
}

func (r *recorder) ConnectSucceeded(pool, backend string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.succeeded[pool+"/"+backend]++
}

func (r *recorder) counts(backend string) (failed, succeeded int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed["p/"+backend], r.succeeded["p/"+backend]
}
