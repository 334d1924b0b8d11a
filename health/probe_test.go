package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// newTestProber builds the prober NewMonitor would build for addr.
func newTestProber(t *testing.T, c Check, addr string) prober {
	t.Helper()
	c = complete(c)
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	var base *tls.Config
	var err error
	if c.Kind == KindHTTPS {
		if base, _, err = loadTLS(c); err != nil {
			t.Fatal(err)
		}
	}
	p, err := newProber(c, addr, (&net.Dialer{}).DialContext, base)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func probeReason(t *testing.T, c Check, addr string) string {
	t.Helper()
	reason, err := newTestProber(t, c, addr).probe(context.Background())
	t.Logf("%s %s: reason %s, err %v", c.Kind, addr, reason, err)
	if (reason == ReasonOK) != (err == nil) {
		t.Fatalf("reason %q with err %v", reason, err)
	}
	return reason
}

func TestTCPProbeSucceedsOnListenerAndIsRefusedAfterClose(t *testing.T) {
	s := newTCPServer(t)
	c := Check{Kind: KindTCP, Timeout: failAfter}
	if r := probeReason(t, c, s.addr()); r != ReasonOK {
		t.Fatalf("reason %q against a listener", r)
	}
	s.stop()
	if r := probeReason(t, c, s.addr()); r != ReasonRefused {
		t.Fatalf("reason %q against a closed port, want refused", r)
	}
}

func TestHTTPProbeSendsPathQueryAndHostOnAFreshConnection(t *testing.T) {
	s := newHTTPServer(t, nil)
	c := Check{Kind: KindHTTP, Path: "/readyz?verbose=1", Host: "api.example", Timeout: failAfter}
	p := newTestProber(t, c, s.addr())
	for i := range 2 {
		if r, err := p.probe(context.Background()); r != ReasonOK {
			t.Fatalf("check %d: %s %v", i, r, err)
		}
	}
	req := s.lastRequest()
	if req.Method != http.MethodGet || req.URL.RequestURI() != "/readyz?verbose=1" || req.Host != "api.example" {
		t.Fatalf("server saw %s %s Host %s", req.Method, req.URL.RequestURI(), req.Host)
	}
	if req.UserAgent() != "vipd-health-check" || !req.Close {
		t.Fatalf("user agent %q, close %v", req.UserAgent(), req.Close)
	}
	if got := s.requests.Load(); got != 2 {
		t.Fatalf("server counted %d requests, want 2", got)
	}
}

func TestHTTPProbeStatusRanges(t *testing.T) {
	s := newHTTPServer(t, nil)
	cases := []struct {
		status int
		expect []StatusRange
		want   string
	}{
		{200, []StatusRange{{200, 399}}, ReasonOK},
		{302, []StatusRange{{200, 399}}, ReasonOK}, // config's default; redirects are not followed
		{404, []StatusRange{{200, 399}}, ReasonStatus},
		{503, []StatusRange{{200, 399}}, ReasonStatus},
		{200, []StatusRange{{200, 200}}, ReasonOK},
		{204, []StatusRange{{200, 200}}, ReasonStatus},
		{401, []StatusRange{{200, 299}, {401, 401}}, ReasonOK}, // e.g. an apiserver without anonymous auth
	}
	for _, tc := range cases {
		s.status.Store(int64(tc.status))
		c := Check{Kind: KindHTTP, ExpectStatus: tc.expect, Timeout: failAfter}
		if got := probeReason(t, c, s.addr()); got != tc.want {
			t.Errorf("status %d, expect %v: reason %q, want %q", tc.status, tc.expect, got, tc.want)
		}
	}
}

func TestHTTPProbeExpectBodyIsSearchedInABoundedPrefix(t *testing.T) {
	s := newHTTPServer(t, nil)
	c := Check{Kind: KindHTTP, ExpectBody: "ready", Timeout: failAfter}
	cases := []struct {
		body, want string
	}{
		{"status: ready\n", ReasonOK},
		{"starting", ReasonBody},
		{strings.Repeat("x", MaxBody-5) + "ready", ReasonOK},
		{strings.Repeat("x", MaxBody) + "ready", ReasonBody},
	}
	for _, tc := range cases {
		s.body.Store(tc.body)
		if got := probeReason(t, c, s.addr()); got != tc.want {
			t.Errorf("body of %d bytes: reason %q, want %q", len(tc.body), got, tc.want)
		}
	}
}

func TestHTTPProbeTimesOutOnAServerThatNeverAnswers(t *testing.T) {
	s := newSilentServer(t)
	start := time.Now()
	if r := probeReason(t, Check{Kind: KindHTTP, Timeout: 100 * time.Millisecond}, s.ln.Addr().String()); r != ReasonTimeout {
		t.Fatalf("reason %q, want timeout", r)
	}
	t.Logf("timed out after %v (timeout 100ms)", time.Since(start))
}

func TestHTTPSProbeWithSelfSignedCertificate(t *testing.T) {
	cert := newSelfSigned(t)
	s := newHTTPServer(t, &tls.Config{Certificates: []tls.Certificate{cert.cert}})
	cases := []struct {
		name string
		c    Check
		want string
	}{
		{"verify against system roots", Check{}, ReasonTLS},
		{"tls_skip_verify", Check{TLSSkipVerify: true}, ReasonOK},
		{"ca_file", Check{CAFile: cert.certFile}, ReasonOK},
		{"ca_file and matching server_name", Check{CAFile: cert.certFile, ServerName: "backend.test"}, ReasonOK},
		{"ca_file and Host header as name", Check{CAFile: cert.certFile, Host: "backend.test:443"}, ReasonOK},
		{"ca_file and wrong server_name", Check{CAFile: cert.certFile, ServerName: "other.test"}, ReasonTLS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.Kind, c.Timeout = KindHTTPS, failAfter
			if got := probeReason(t, c, s.addr()); got != tc.want {
				t.Fatalf("reason %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHTTPSProbePresentsClientCertificate(t *testing.T) {
	cert := newSelfSigned(t)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		s := newHTTPServer(t, &tls.Config{
			Certificates: []tls.Certificate{cert.cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    cert.pool,
			MaxVersion:   version,
		})
		without := Check{Kind: KindHTTPS, CAFile: cert.certFile, Timeout: failAfter}
		if got := probeReason(t, without, s.addr()); got != ReasonTLS {
			t.Errorf("TLS %x without client cert: reason %q, want tls", version, got)
		}
		with := without
		with.CertFile, with.KeyFile = cert.certFile, cert.keyFile
		if got := probeReason(t, with, s.addr()); got != ReasonOK {
			t.Errorf("TLS %x with client cert: reason %q, want ok", version, got)
		}
	}
}

// Stopping the monitor while an https check waits for its answer, past the
// handshake, ends the check at once: the stop reaches the TCP conn under
// the TLS one.
func TestHTTPSProbeStoppedWhileWaitingForTheAnswer(t *testing.T) {
	cert := newSelfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.cert}})
	if err != nil {
		t.Fatal(err)
	}
	requested := make(chan struct{}, 1)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
		// The request arrives after the check has switched to the TLS
		// conn; it is never answered.
		if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			requested <- struct{}{}
		}
		io.Copy(io.Discard, c)
	}()
	t.Cleanup(func() { // ends the server goroutine, and a check left hanging
		ln.Close()
		if c, ok := <-accepted; ok {
			c.Close()
		}
	})
	p := newTestProber(t, Check{Kind: KindHTTPS, TLSSkipVerify: true, Timeout: time.Hour}, ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.probe(ctx); close(done) }()
	select {
	case <-requested:
	case <-time.After(failAfter):
		t.Fatal("the check never sent its request")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(failAfter):
		t.Fatal("the check did not end when stopped")
	}
}
