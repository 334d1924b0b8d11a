package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// dialFunc opens a check connection.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// prober runs one check against one backend. reason is ReasonOK on success;
// err describes a failure for logs and Status.
type prober interface {
	probe(ctx context.Context) (reason string, err error)
}

// tcpProber checks that a TCP connect completes within timeout.
type tcpProber struct {
	addr    string
	dial    dialFunc
	timeout time.Duration
}

func (p *tcpProber) probe(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	conn, err := p.dial(ctx, "tcp", p.addr)
	if err != nil {
		return classify(ctx, err), fmt.Errorf("connect %s: %w", p.addr, err)
	}
	conn.Close()
	return ReasonOK, nil
}

// httpProber sends one GET on a fresh connection (never reused: each check
// proves that a new client can connect) and checks status and body.
type httpProber struct {
	addr    string
	dial    dialFunc
	timeout time.Duration
	tls     *tls.Config // nil for plain http
	request []byte      // the serialized GET, built once
	expect  []StatusRange
	body    string
	maxBody int64
}

func (p *httpProber) probe(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	conn, err := p.dial(ctx, "tcp", p.addr)
	if err != nil {
		return classify(ctx, err), fmt.Errorf("connect %s: %w", p.addr, err)
	}
	defer conn.Close()
	// The deadline bounds every read and write with the check's Timeout;
	// the AfterFunc wakes blocked I/O when the monitor is stopped or the
	// Timeout runs out. Both act on the TCP conn, which is never reassigned
	// (the AfterFunc runs on its own goroutine), and end TLS I/O above it too.
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	rw := conn // what the request and response go over: conn, or TLS on it
	if p.tls != nil {
		tc := tls.Client(conn, p.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			reason := ReasonTLS
			if isTimeout(ctx, err) {
				reason = ReasonTimeout
			}
			return reason, fmt.Errorf("tls handshake with %s: %w", p.addr, err)
		}
		rw = tc
	}
	if _, err := rw.Write(p.request); err != nil {
		return classify(ctx, err), fmt.Errorf("send request to %s: %w", p.addr, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(rw), nil)
	if err != nil {
		return classify(ctx, err), fmt.Errorf("read response from %s: %w", p.addr, err)
	}
	defer resp.Body.Close()
	if !statusOK(p.expect, resp.StatusCode) {
		return ReasonStatus, fmt.Errorf("%s answered status %d", p.addr, resp.StatusCode)
	}
	if p.body == "" {
		return ReasonOK, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.maxBody))
	if bytes.Contains(body, []byte(p.body)) {
		return ReasonOK, nil
	}
	if err != nil {
		return classify(ctx, err), fmt.Errorf("read body from %s: %w", p.addr, err)
	}
	return ReasonBody, fmt.Errorf("%s: body (first %d bytes) does not contain %q", p.addr, len(body), p.body)
}

// statusOK reports whether code lies in one of the ranges.
func statusOK(ranges []StatusRange, code int) bool {
	for _, r := range ranges {
		if code >= r.Min && code <= r.Max {
			return true
		}
	}
	return false
}

// classify maps a network error to a reason without looking at its text.
func classify(ctx context.Context, err error) string {
	var oe *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case isTimeout(ctx, err):
		return ReasonTimeout
	case errors.As(err, &oe) && oe.Op == "remote error":
		// crypto/tls reports an alert from the peer this way; with TLS 1.3 a
		// rejected client certificate only shows on the first read.
		return ReasonTLS
	default:
		return ReasonNetwork
	}
}

// isTimeout reports whether err (or the check's context) says the check ran
// out of time.
func isTimeout(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// buildRequest serializes the GET once per backend.
func buildRequest(path, host string) ([]byte, error) {
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", path, err)
	}
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Host:       host,
		Header:     http.Header{"User-Agent": {"vipd-health-check"}, "Accept": {"*/*"}},
		Close:      true,
	}
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		return nil, fmt.Errorf("build request for %s%s: %w", host, path, err)
	}
	return buf.Bytes(), nil
}

// loadTLS builds the pool's TLS client config from the Check; errors name
// the file that could not be used. serverName is filled in per backend.
// files is a digest of the CA, certificate and key files as read, so a
// reload can tell a rotated certificate at the same path from an unchanged
// one.
func loadTLS(c Check) (_ *tls.Config, files [sha256.Size]byte, _ error) {
	cfg := &tls.Config{
		InsecureSkipVerify: c.TLSSkipVerify, // operator's explicit choice (HAProxy "verify none")
		NextProtos:         []string{"http/1.1"},
		MinVersion:         tls.VersionTLS12,
	}
	digest := sha256.New()
	read := func(key, path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read %s %s: %w", key, path, err)
		}
		fmt.Fprintf(digest, "%s %d\n", key, len(b))
		digest.Write(b)
		return b, nil
	}
	if c.CAFile != "" {
		pem, err := read("ca_file", c.CAFile)
		if err != nil {
			return nil, files, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, files, fmt.Errorf("ca_file %s: no PEM certificate found", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		if c.CertFile == "" || c.KeyFile == "" {
			return nil, files, fmt.Errorf("cert_file %q and key_file %q: both or neither must be set", c.CertFile, c.KeyFile)
		}
		certPEM, err := read("cert_file", c.CertFile)
		if err != nil {
			return nil, files, err
		}
		keyPEM, err := read("key_file", c.KeyFile)
		if err != nil {
			return nil, files, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, files, fmt.Errorf("load cert_file %s / key_file %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	copy(files[:], digest.Sum(nil))
	return cfg, files, nil
}

// serverNameFor picks the name to send as SNI and to verify: the configured
// ServerName, else the Host header's host, else the backend's host.
func serverNameFor(c Check, backend string) string {
	if c.ServerName != "" {
		return c.ServerName
	}
	name := c.Host
	if name == "" {
		name = backend
	}
	if host, _, err := net.SplitHostPort(name); err == nil {
		return host
	}
	return strings.Trim(name, "[]")
}
