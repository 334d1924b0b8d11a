package health

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// failAfter bounds every wait in these tests so a bug fails the test instead
// of hanging it. It is not a timing expectation: nothing should come near it.
const failAfter = 10 * time.Second

// fakeClock hands out timers that fire only when the test says so, and
// records every delay a worker asked for.
type fakeClock struct {
	mu      sync.Mutex
	pending []*fakeTimer    // guarded by mu
	delays  []time.Duration // guarded by mu: every NewTimer delay, in order
	wake    chan struct{}   // signalled (non-blocking) on NewTimer
}

type fakeTimer struct {
	fc *fakeClock
	c  chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{wake: make(chan struct{}, 1)} }

func (fc *fakeClock) NewTimer(d time.Duration) clockTimer {
	t := &fakeTimer{fc: fc, c: make(chan time.Time, 1)}
	fc.mu.Lock()
	fc.pending = append(fc.pending, t)
	fc.delays = append(fc.delays, d)
	fc.mu.Unlock()
	select {
	case fc.wake <- struct{}{}:
	default:
	}
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.fc.mu.Lock()
	defer t.fc.mu.Unlock()
	i := slices.Index(t.fc.pending, t)
	if i < 0 {
		return false
	}
	t.fc.pending = slices.Delete(t.fc.pending, i, i+1)
	return true
}

// waitPending blocks until n timers are pending.
func (fc *fakeClock) waitPending(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(failAfter)
	for {
		fc.mu.Lock()
		got := len(fc.pending)
		fc.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-fc.wake:
		case <-deadline:
			t.Fatalf("waiting for %d pending timers, have %d", n, got)
		}
	}
}

// fireAll fires every pending timer.
func (fc *fakeClock) fireAll() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, p := range fc.pending {
		p.c <- time.Time{}
	}
	fc.pending = nil
}

// made is how many timers workers have asked for so far.
func (fc *fakeClock) made() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.delays)
}

// pendingTimers are the timers waiting to fire now.
func (fc *fakeClock) pendingTimers() []*fakeTimer {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return slices.Clone(fc.pending)
}

// stillPending counts the timers of ts that still wait: a worker that was
// stopped has stopped its timer.
func (fc *fakeClock) stillPending(ts []*fakeTimer) int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	n := 0
	for _, t := range ts {
		if slices.Contains(fc.pending, t) {
			n++
		}
	}
	return n
}

// pendingNow is how many timers wait to fire.
func (fc *fakeClock) pendingNow() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.pending)
}

// lastDelay is the delay of the most recent timer.
func (fc *fakeClock) lastDelay() time.Duration {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.delays[len(fc.delays)-1]
}

// complete fills the values a test leaves zero with ones that do not matter
// to it (the fake clock decides when checks run), as config does for the
// daemon: NewMonitor itself fills nothing.
func complete(c Check) Check {
	if c.Kind == KindNone {
		return c
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.FastInterval == 0 {
		c.FastInterval = c.Interval
	}
	if c.Timeout == 0 {
		c.Timeout = failAfter
	}
	if c.Rise == 0 {
		c.Rise = 2
	}
	if c.Fall == 0 {
		c.Fall = 3
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if len(c.ExpectStatus) == 0 {
		c.ExpectStatus = []StatusRange{{Min: 200, Max: 399}}
	}
	return c
}

// harness runs a Monitor on a fake clock and records what it reports.
type harness struct {
	t      *testing.T
	m      *Monitor
	fc     *fakeClock
	reg    *prometheus.Registry
	checks chan string // reason of every completed active check

	mu    sync.Mutex
	trans []transition // guarded by mu
}

// startMonitor builds a Monitor for pools (their checks completed) and runs
// it until the test ends.
func startMonitor(t *testing.T, pools ...PoolChecks) *harness {
	t.Helper()
	h := &harness{t: t, fc: newFakeClock(), reg: prometheus.NewRegistry(), checks: make(chan string, 100)}
	for i := range pools {
		pools[i].Check = complete(pools[i].Check)
	}
	m, err := NewMonitor(Options{Pools: pools, Registerer: h.reg})
	if err != nil {
		t.Fatalf("NewMonitor: %v", err)
	}
	m.clock = h.fc
	m.onTransition = func(tr transition) { h.mu.Lock(); h.trans = append(h.trans, tr); h.mu.Unlock() }
	m.afterCheck = func(_ *Backend, reason string) { h.checks <- reason }
	h.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// step fires the pending check of a single-backend monitor and returns its reason.
func (h *harness) step() string {
	h.t.Helper()
	h.fc.waitPending(h.t, 1)
	h.fc.fireAll()
	select {
	case r := <-h.checks:
		return r
	case <-time.After(failAfter):
		h.t.Fatal("check did not complete")
		return ""
	}
}

func (h *harness) transitions() []transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.trans)
}

// metric returns the value of a gauge or counter with exactly these labels.
func (h *harness) metric(name string, labels map[string]string) float64 {
	h.t.Helper()
	v, ok := h.series(name, labels)
	if !ok {
		h.t.Fatalf("metric %s%v not found", name, labels)
	}
	return v
}

// series finds the gauge or counter name with exactly these labels and
// returns its value; false when there is none.
func (h *harness) series(name string, labels map[string]string) (float64, bool) {
	h.t.Helper()
	fams, err := h.reg.Gather()
	if err != nil {
		h.t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mt := range f.GetMetric() {
			if len(mt.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range mt.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			if mt.GetCounter() != nil {
				return mt.GetCounter().GetValue(), true
			}
			return mt.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// deadAddr is a loopback address nothing listens on: connects are refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// tcpServer accepts and closes connections, counting them.
type tcpServer struct {
	ln       net.Listener
	accepted chan struct{} // one value per accepted connection
	done     chan struct{}
}

func newTCPServer(t *testing.T) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{ln: ln, accepted: make(chan struct{}, 100), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted <- struct{}{}
			c.Close()
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *tcpServer) addr() string { return s.ln.Addr().String() }

// waitAccepted waits for n accepted connections: a TCP check completes
// when the kernel finishes the handshake, before the server's Accept.
func waitAccepted(t *testing.T, accepted <-chan struct{}, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-accepted:
		case <-time.After(failAfter):
			t.Fatalf("accepted %d connections, want %d", i, n)
		}
	}
}

// stop closes the listener: later connects are refused.
func (s *tcpServer) stop() { s.ln.Close(); <-s.done }

// silentServer accepts connections and never writes a byte.
type silentServer struct {
	ln       net.Listener
	accepted chan struct{} // one value per accepted connection
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn // guarded by mu
}

func newSilentServer(t *testing.T) *silentServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentServer{ln: ln, accepted: make(chan struct{}, 100)}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.accepted <- struct{}{}
			s.wg.Go(func() { io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// httpServer answers every request with a settable status and body and
// records what it was asked.
type httpServer struct {
	srv      *httptest.Server
	requests atomic.Int64
	status   atomic.Int64
	body     atomic.Value // string
	mu       sync.Mutex
	last     *http.Request // guarded by mu
}

// newHTTPServer starts a plain server, or a TLS one when cfg is not nil.
func newHTTPServer(t *testing.T, cfg *tls.Config) *httpServer {
	t.Helper()
	s := &httpServer{}
	s.status.Store(http.StatusOK)
	s.body.Store("ok")
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		s.last = r
		s.mu.Unlock()
		w.WriteHeader(int(s.status.Load()))
		io.WriteString(w, s.body.Load().(string))
	}))
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are the point of some tests
	if cfg != nil {
		s.srv.TLS = cfg
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *httpServer) addr() string { return s.srv.Listener.Addr().String() }

func (s *httpServer) lastRequest() *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// selfSigned is a self-signed certificate for 127.0.0.1, usable by servers
// and clients, with its PEM files.
type selfSigned struct {
	cert              tls.Certificate
	pool              *x509.CertPool
	certFile, keyFile string
}

func newSelfSigned(t *testing.T) selfSigned {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vipd health test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"backend.test"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := selfSigned{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(s.certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if s.cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	s.pool = x509.NewCertPool()
	s.pool.AppendCertsFromPEM(certPEM)
	return s
}
