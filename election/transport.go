package election

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
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

// authLayer authenticates every Raft connection with an HMAC-SHA256
// challenge-response over fresh nonces, in both directions, before any Raft
// byte flows. A peer without the key is dropped. Traffic is authenticated at
// connect time, not encrypted.
type authLayer struct {
	raft.StreamLayer
	key     []byte
	timeout time.Duration
	log     *zap.Logger
}

const nonceLen = 32

// errAuth marks a failed handshake.
var errAuth = errors.New("raft peer failed authentication")

func newAuthLayer(inner raft.StreamLayer, secret []byte, timeout time.Duration, log *zap.Logger) *authLayer {
	// Derive a separate key so the gossip key is never used for two purposes.
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("vipd raft authentication v1"))
	return &authLayer{StreamLayer: inner, key: m.Sum(nil), timeout: timeout, log: log}
}

// Accept returns at once; the handshake runs on the connection's first Read
// or Write, in raft's per-connection goroutine, so a silent peer cannot stall
// the accept loop.
func (a *authLayer) Accept() (net.Conn, error) {
	c, err := a.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return &authConn{Conn: c, layer: a}, nil
}

func (a *authLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := a.StreamLayer.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	if err := a.handshake(c, "dial", timeout); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("authenticate raft peer %s: %w", address, err)
	}
	return c, nil
}

// handshake: both sides send a nonce, then the MAC of (own role, peer nonce,
// own nonce), and check the peer's MAC. Roles differ, so a reflected MAC fails.
func (a *authLayer) handshake(c net.Conn, role string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = a.timeout
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	mine := make([]byte, nonceLen)
	if _, err := rand.Read(mine); err != nil {
		return err
	}
	if _, err := c.Write(mine); err != nil {
		return fmt.Errorf("send nonce: %w", err)
	}
	theirs := make([]byte, nonceLen)
	if _, err := io.ReadFull(c, theirs); err != nil {
		return fmt.Errorf("read nonce: %w", err)
	}
	peerRole := "accept"
	if role == "accept" {
		peerRole = "dial"
	}
	if _, err := c.Write(a.mac(role, theirs, mine)); err != nil {
		return fmt.Errorf("send proof: %w", err)
	}
	proof := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, proof); err != nil {
		return fmt.Errorf("read proof: %w", err)
	}
	if !hmac.Equal(proof, a.mac(peerRole, mine, theirs)) {
		return errAuth
	}
	return c.SetDeadline(time.Time{})
}

func (a *authLayer) mac(role string, challenge, nonce []byte) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(role))
	m.Write(challenge)
	m.Write(nonce)
	return m.Sum(nil)
}

// authConn is an accepted connection that authenticates before first use.
type authConn struct {
	net.Conn
	layer *authLayer
	once  sync.Once
	err   error
}

func (c *authConn) auth() error {
	c.once.Do(func() {
		if err := c.layer.handshake(c.Conn, "accept", 0); err != nil {
			c.err = fmt.Errorf("authenticate raft peer %s: %w", c.RemoteAddr(), err)
			c.layer.log.Warn("raft connection rejected", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
			_ = c.Conn.Close()
		}
	})
	return c.err
}

func (c *authConn) Read(p []byte) (int, error) {
	if err := c.auth(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *authConn) Write(p []byte) (int, error) {
	if err := c.auth(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
