package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vipd/vipd/config"
)

// The admin API's bounds besides maxAdminBody (docs/security.md, "Bounded
// memory"). One request at a time per connection (HTTP/1.1 only), so a
// connection holds at most one header and one body.
const (
	maxAdminConns  = 64      // concurrent connections; more wait in the kernel's accept queue
	maxAdminHeader = 8 << 10 // request line and headers (net/http allows 4 KiB of slack on top)
)

// minTokenLen refuses tokens short enough to guess; vipctl keygen prints 44
// characters.
const minTokenLen = 16

// Why a request or a TLS handshake was refused: the reason label of
// vipd_admin_auth_failures_total.
const (
	refusedNoToken  = "missing_token"
	refusedBadToken = "wrong_token"
	refusedNoCert   = "missing_client_cert"
	refusedBadCert  = "bad_client_cert"
)

const (
	authorizationName = "Authorization"
	bearerChallenge   = `Bearer realm="vipd"`
)

// adminAuth decides who may call the admin API, and gives this node the
// credentials it presents when it forwards a call to the leader. Every
// request passes guard before any route: reads (GET, HEAD) need
// credentials unless admin.open_reads, everything else always does.
// With both a token and client certificates configured, both are required.
type adminAuth struct {
	log       *zap.Logger
	failures  *prometheus.CounterVec
	openReads bool
	token     []byte           // nil without admin.token_file
	tokenSum  [32]byte         // SHA-256 of token: the comparison takes the same time whatever the length
	cert      *tls.Certificate // admin.tls: served, and presented when forwarding; nil without TLS
	clientCAs *x509.CertPool   // admin.tls.client_ca_file; nil: no client certificate is asked for
	forwarder *http.Transport  // dials the leader's admin API with this node's credentials
}

// newAdminAuth reads the files that cfg names. Errors name the key and the
// file, never the token.
func newAdminAuth(cfg config.Admin, log *zap.Logger, reg prometheus.Registerer) (*adminAuth, error) {
	a := &adminAuth{
		log: log, openReads: cfg.OpenReads,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vipd_admin_auth_failures_total",
			Help: "Admin API requests and TLS handshakes refused for want of valid credentials, by reason.",
		}, []string{"reason"}),
	}
	if cfg.TokenFile != "" {
		token, err := readToken(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin.token_file %q: %w", cfg.TokenFile, err)
		}
		a.token, a.tokenSum = token, sha256.Sum256(token)
	}
	if t := cfg.TLS; t.Enabled() {
		if err := notWorldReadable(t.KeyFile); err != nil {
			return nil, fmt.Errorf("admin.tls.key_file %q: %w", t.KeyFile, err)
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("admin.tls.cert_file %q, key_file %q: %w", t.CertFile, t.KeyFile, pathless(err))
		}
		a.cert = &cert
		if t.ClientCAFile != "" {
			if a.clientCAs, err = readCAs(t.ClientCAFile); err != nil {
				return nil, fmt.Errorf("admin.tls.client_ca_file %q: %w", t.ClientCAFile, err)
			}
			if err := verifyClientCert(cert, a.clientCAs); err != nil {
				return nil, fmt.Errorf("admin.tls.cert_file %q: this node presents it to the leader when it forwards a call, "+
					"so it must be a client certificate from admin.tls.client_ca_file: %w", t.CertFile, err)
			}
		}
	}
	a.forwarder = a.newForwarder()
	for _, r := range []string{refusedNoToken, refusedBadToken, refusedNoCert, refusedBadCert} {
		a.failures.WithLabelValues(r) // exported at 0 before the first failure
	}
	if err := reg.Register(a.failures); err != nil {
		return nil, fmt.Errorf("register admin metrics: %w", err)
	}
	return a, nil
}

// readToken reads a bearer token: surrounding whitespace trimmed, at least
// minTokenLen characters that can travel in a header (RFC 6750 b64token),
// in a file that not every user of the host can read.
func readToken(path string) ([]byte, error) {
	if err := notWorldReadable(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (create it: (umask 077 && vipctl keygen > %s))", err, path)
	} else if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, pathless(err)
	}
	token := bytes.TrimSpace(data)
	switch {
	case len(token) == 0:
		return nil, errors.New("the file is empty (create a token with: vipctl keygen > FILE)")
	case len(token) < minTokenLen:
		return nil, fmt.Errorf("the token is %d characters, fewer than %d (create one with: vipctl keygen > FILE)", len(token), minTokenLen)
	case bytes.IndexFunc(token, func(r rune) bool { return !isTokenChar(r) }) >= 0:
		return nil, errors.New("the token may contain only letters, digits and -._~+/= (vipctl keygen prints one)")
	}
	return token, nil
}

func isTokenChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-._~+/=", r)
}

// notWorldReadable refuses a secret that every user of the host can read.
func notWorldReadable(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return pathless(err)
	}
	if perm := info.Mode().Perm(); perm&0o004 != 0 {
		return fmt.Errorf("readable by every user (mode %04o): chmod o-r it (0600, or 0640 for a group)", perm)
	}
	return nil
}

func readCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, pathless(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// pathless drops the path from a file error: the caller names the key and
// the file already.
func pathless(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// verifyClientCert checks cert's chain against roots for client use, as
// the server side of a handshake does.
func verifyClientCert(cert tls.Certificate, roots *x509.CertPool) error {
	chain := make([]*x509.Certificate, 0, len(cert.Certificate))
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		chain = append(chain, c)
	}
	return verifyChain(chain, roots)
}

func verifyChain(chain []*x509.Certificate, roots *x509.CertPool) error {
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := chain[0].Verify(opts)
	return err
}

// serverTLS is the admin listener's TLS config, nil without admin.tls.
// With client_ca_file the handshake asks for a client certificate and
// verifyClient checks it, so that a refused handshake is logged with the
// caller's address and counted like any other refusal.
func (a *adminAuth) serverTLS() *tls.Config {
	if a.cert == nil {
		return nil
	}
	base := &tls.Config{
		MinVersion:   tls.VersionTLS12, // 1.3 whenever the client has it
		Certificates: []tls.Certificate{*a.cert},
		NextProtos:   []string{"http/1.1"},
	}
	if a.clientCAs == nil {
		return base
	}
	base.ClientCAs, base.ClientAuth = a.clientCAs, tls.RequestClientCert
	// Each handshake gets a config of its own, whose tickets no other could
	// resume: issue none. Every connection has its certificate verified.
	base.SessionTicketsDisabled = true
	withHook := base.Clone()
	withHook.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		remote := hello.Conn.RemoteAddr().String()
		c := base.Clone()
		c.VerifyConnection = func(cs tls.ConnectionState) error { return a.verifyClient(cs, remote) }
		return c, nil
	}
	return withHook
}

// verifyClient accepts a connection whose client certificate chains to
// client_ca_file. Without a certificate it accepts only when reads are
// open; guard then refuses every other request on that connection.
func (a *adminAuth) verifyClient(cs tls.ConnectionState, remote string) error {
	if len(cs.PeerCertificates) == 0 {
		if a.openReads {
			return nil
		}
		a.refused(remote, "TLS handshake", refusedNoCert, nil)
		return errors.New("a client certificate is required")
	}
	if err := verifyChain(cs.PeerCertificates, a.clientCAs); err != nil {
		a.refused(remote, "TLS handshake", refusedBadCert, err)
		return fmt.Errorf("client certificate: %w", err)
	}
	return nil
}

// guard lets a request through to next only with the credentials it needs.
// It wraps the whole admin handler, so no route, present or future, is
// reachable without them.
func (a *adminAuth) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.openReads && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		switch reason := a.check(r); reason {
		case "":
			next.ServeHTTP(w, r)
		case refusedNoCert:
			a.refused(r.RemoteAddr, r.Method+" "+r.URL.Path, reason, nil)
			writeError(w, http.StatusForbidden, errors.New("a client certificate from admin.tls.client_ca_file is required"))
		default:
			a.refused(r.RemoteAddr, r.Method+" "+r.URL.Path, reason, nil)
			w.Header().Set("WWW-Authenticate", bearerChallenge)
			writeError(w, http.StatusUnauthorized, errors.New("a valid bearer token is required (Authorization: Bearer <admin.token_file>)"))
		}
	})
}

// check returns why r may not pass, or "". A client certificate on r was
// verified in the handshake (verifyClient), or the handshake failed.
func (a *adminAuth) check(r *http.Request) string {
	if a.clientCAs != nil && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
		return refusedNoCert
	}
	if a.token == nil {
		return ""
	}
	scheme, token, ok := strings.Cut(r.Header.Get(authorizationName), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return refusedNoToken
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	if subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) != 1 {
		return refusedBadToken
	}
	return ""
}

// refused logs and counts one refusal: who, what, why. Never the token.
func (a *adminAuth) refused(remote, what, reason string, err error) {
	a.failures.WithLabelValues(reason).Inc()
	fields := []zap.Field{zap.String("remote", remote), zap.String("request", what), zap.String("reason", reason)}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	a.log.Warn("admin call refused", fields...)
}

// scheme is how peers' admin APIs are reached. Every node of a cluster has
// the same admin.tls setting, so this node's own tells.
func (a *adminAuth) scheme() string {
	if a.cert != nil {
		return "https"
	}
	return "http"
}

// authorize replaces the caller's credentials on a forwarded request with
// this node's own: the leader trusts the node that vouches for the call.
func (a *adminAuth) authorize(h http.Header) {
	h.Del(authorizationName)
	if a.token != nil {
		h.Set(authorizationName, "Bearer "+string(a.token))
	}
}

// newForwarder dials the leader with this node's certificate and verifies
// the leader's against client_ca_file (the system roots without one). No
// keep-alive: forwards are rare, and nothing idles after one.
func (a *adminAuth) newForwarder() *http.Transport {
	t := &http.Transport{
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  25 * time.Second, // below the admin WriteTimeout: the 502 still reaches the caller
		MaxResponseHeaderBytes: maxAdminHeader,
		DisableKeepAlives:      true,
	}
	if cert := a.cert; cert != nil {
		t.TLSClientConfig = &tls.Config{
			MinVersion: tls.VersionTLS12, RootCAs: a.clientCAs,
			// Presented even when the leader asks for another CA's, so the
			// leader logs the certificate it refused.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		}
	}
	return t
}
