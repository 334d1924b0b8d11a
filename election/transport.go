package election

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// tcpLayer is raft's StreamLayer over plain TCP, advertising the bind
// address as is (raft's own TCP transport cannot be wrapped). It tracks its
// connections and closes them all on Close: raft's NetworkTransport closes
// only the listener, which would leave pooled and accepted connections (and
// the peers' reader goroutines) open after Shutdown.
type tcpLayer struct {
	ln        net.Listener
	advertise net.Addr

	mu     sync.Mutex // guards the fields below
	conns  map[*trackedConn]struct{}
	closed bool
}

var _ raft.StreamLayer = (*tcpLayer)(nil)

func listenTCP(bind string) (*tcpLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen raft on %s: %w", bind, err)
	}
	adv, err := net.ResolveTCPAddr("tcp", bind)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("resolve raft address %s: %w", bind, err)
	}
	return &tcpLayer{ln: ln, advertise: adv, conns: map[*trackedConn]struct{}{}}, nil
}

func (t *tcpLayer) Addr() net.Addr { return t.advertise }

func (t *tcpLayer) Accept() (net.Conn, error) {
	c, err := t.ln.Accept()
	if err != nil {
		return nil, err
	}
	return t.track(c)
}

func (t *tcpLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	return t.track(c)
}

func (t *tcpLayer) track(c net.Conn) (net.Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, layer: t}
	t.conns[tc] = struct{}{}
	return tc, nil
}

// Close closes the listener and every connection made through the layer.
func (t *tcpLayer) Close() error {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = map[*trackedConn]struct{}{}
	t.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return t.ln.Close()
}

type trackedConn struct {
	net.Conn
	layer *tcpLayer
}

// Read reports a connection closed by Close as a plain end of stream, so
// raft does not log every connection cut at shutdown as a decode error.
func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, net.ErrClosed) {
		err = io.EOF
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.layer.mu.Lock()
	delete(c.layer.conns, c)
	c.layer.mu.Unlock()
	return c.Conn.Close()
}

// tlsLayer runs every Raft connection over TLS 1.3 with mutual
// authentication (security.go builds the configurations). Nothing reaches
// raft from a peer that has not completed the handshake, and after it the
// stream is encrypted and integrity-protected.
type tlsLayer struct {
	raft.StreamLayer
	server, client *tls.Config
	timeout        time.Duration // bounds one handshake: the raft I/O timeout
	log            *zap.Logger
	failures       *prometheus.CounterVec // by reason
}

func newTLSLayer(inner raft.StreamLayer, sec *security, timeout time.Duration, log *zap.Logger, failures *prometheus.CounterVec) *tlsLayer {
	return &tlsLayer{StreamLayer: inner, server: sec.raftServer, client: sec.raftClient, timeout: timeout, log: log, failures: failures}
}

// Accept returns at once; see serverConn.
func (l *tlsLayer) Accept() (net.Conn, error) {
	c, err := l.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return l.serverConn(c), nil
}

// serverConn wraps an accepted connection. The handshake runs on its first
// Read or Write, in raft's per-connection goroutine, so a silent peer cannot
// stall the accept loop. This is the path every unauthenticated byte takes.
func (l *tlsLayer) serverConn(c net.Conn) net.Conn {
	return &serverConn{Conn: tls.Server(c, l.server), layer: l}
}

func (l *tlsLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := l.StreamLayer.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	cfg := l.client.Clone()
	// Checked against the certificate only with a CA; the pinned pair ignores it.
	cfg.ServerName, _, _ = net.SplitHostPort(string(address))
	tc := tls.Client(c, cfg)
	if timeout <= 0 || timeout > l.timeout {
		timeout = l.timeout
	}
	if err := l.handshake(tc, "dial", timeout); err != nil {
		return nil, err
	}
	return tc, nil
}

// handshake completes c's handshake within timeout. On failure it closes c,
// counts and logs the failure with the remote address (the error names no
// key material) and returns it.
func (l *tlsLayer) handshake(c *tls.Conn, side string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := c.HandshakeContext(ctx)
	if err == nil {
		return nil
	}
	_ = c.Close()
	reason := handshakeReason(err)
	l.failures.WithLabelValues(reason).Inc()
	l.log.Warn("raft TLS handshake failed", zap.String("side", side), zap.Stringer("remote", c.RemoteAddr()),
		zap.String("reason", reason), zap.Error(err))
	return fmt.Errorf("raft TLS handshake with %s: %w", c.RemoteAddr(), err)
}

// Handshake failure reasons, the label values of vipd_raft_handshake_failures_total.
const (
	reasonTimeout        = "timeout"          // no complete handshake within the raft I/O timeout
	reasonNotTLS         = "not_tls"          // the peer sent something else (a node without a key, a scanner)
	reasonUntrustedPeer  = "untrusted_peer"   // this node rejected the peer's certificate (wrong key, other CA)
	reasonRejectedByPeer = "rejected_by_peer" // the peer rejected this node's certificate
	reasonClosed         = "closed"           // the connection ended mid-handshake
	reasonOther          = "other"
)

var handshakeReasons = []string{reasonTimeout, reasonNotTLS, reasonUntrustedPeer, reasonRejectedByPeer, reasonClosed, reasonOther}

func handshakeReason(err error) string {
	var record tls.RecordHeaderError
	var chain *tls.CertificateVerificationError
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return reasonTimeout
	case errors.As(err, &record):
		return reasonNotTLS
	case errors.Is(err, errUnknownPeerKey), errors.As(err, &chain):
		return reasonUntrustedPeer
	case errors.As(err, &op) && op.Op == "remote error": // crypto/tls's mark of a received alert
		return reasonRejectedByPeer
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return reasonClosed
	}
	return reasonOther
}

// serverConn is an accepted connection that completes its handshake before
// first use.
type serverConn struct {
	*tls.Conn
	layer *tlsLayer
	once  sync.Once
	err   error
}

func (c *serverConn) ready() error {
	c.once.Do(func() { c.err = c.layer.handshake(c.Conn, "accept", c.layer.timeout) })
	return c.err
}

// Read reports a failed handshake as the end of the stream: the failure is
// logged and counted once, by handshake; raft would log any other error a
// second time, as an undecodable command.
func (c *serverConn) Read(p []byte) (int, error) {
	if err := c.ready(); err != nil {
		return 0, io.EOF
	}
	return c.Conn.Read(p)
}

func (c *serverConn) Write(p []byte) (int, error) {
	if err := c.ready(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
