package election

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vipd/vipd/lease"
)

// leasePort carries the spread VIP lease protocol on the Raft transport's
// port (docs/architecture.md, "Where the messages travel"): a connection
// whose first byte is lease.ProtocolByte goes to the lease server, any
// other to raft. Both pass the same stream layer first, so a lease
// connection is authenticated exactly as a Raft one (cluster key or CA).
type leasePort struct {
	handler atomic.Pointer[func(net.Conn)] // the lease server; nil: lease connections are closed

	mu     sync.Mutex       // guards stream
	stream raft.StreamLayer // the layer raft uses, for dialling; nil before Start
}

// wrap returns s with lease connections taken out of raft's accept path.
func (p *leasePort) wrap(s raft.StreamLayer) raft.StreamLayer {
	p.mu.Lock()
	p.stream = s
	p.mu.Unlock()
	return &leaseMux{StreamLayer: s, port: p}
}

// ServeLeases makes handle the server of lease connections: it is called,
// in the goroutine raft gave the connection, with the connection after its
// first byte, and the connection is closed when it returns. Until it is
// set, lease connections are closed at once.
func (n *Node) ServeLeases(handle func(net.Conn)) { n.leases.handler.Store(&handle) }

// DialLease opens a lease connection to the node whose Raft address is
// raftAddr, through the same stream layer (and authentication) as Raft.
func (n *Node) DialLease(ctx context.Context, raftAddr string) (net.Conn, error) {
	n.leases.mu.Lock()
	s := n.leases.stream
	n.leases.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("dial lease server %s: %w", raftAddr, ErrNotStarted)
	}
	timeout := ioTimeout(n.opts.Timing)
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	c, err := dialContext(ctx, s, raft.ServerAddress(raftAddr), timeout)
	if err != nil {
		return nil, fmt.Errorf("dial lease server %s: %w", raftAddr, err)
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{lease.ProtocolByte}); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("open lease protocol with %s: %w", raftAddr, err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// dialContext is s.Dial that also returns when ctx ends. The stream layer
// takes only a timeout, and a dead host answers no SYN, so without this a
// holder that changed leaders would keep a dial to the dead one for the
// whole timeout. The dial left behind ends within its timeout and closes
// what it got.
func dialContext(ctx context.Context, s raft.StreamLayer, addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	type dialed struct {
		c   net.Conn
		err error
	}
	out := make(chan dialed) // unbuffered: a result is either taken or closed
	go func() {
		c, err := s.Dial(addr, timeout)
		select {
		case out <- dialed{c, err}:
		case <-ctx.Done():
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	select {
	case d := <-out:
		return d.c, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// leaseMux is the stream layer raft accepts from. It looks at each
// connection's first byte in the connection's own goroutine (raft's
// handler), so a silent peer never stalls the accept loop.
type leaseMux struct {
	raft.StreamLayer
	port *leasePort
}

func (m *leaseMux) Accept() (net.Conn, error) {
	c, err := m.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, port: m.port}, nil
}

// sniffConn hands itself to the lease server if its first byte says so;
// raft then reads the end of the stream and closes it.
type sniffConn struct {
	net.Conn
	port    *leasePort
	sniffed bool // only raft's handler goroutine reads
}

func (c *sniffConn) Read(p []byte) (int, error) {
	if c.sniffed || len(p) == 0 {
		return c.Conn.Read(p)
	}
	c.sniffed = true
	n, err := c.Conn.Read(p[:1])
	if n == 0 || p[0] != lease.ProtocolByte {
		return n, err
	}
	if h := c.port.handler.Load(); h != nil {
		(*h)(c.Conn)
	}
	return 0, io.EOF
}
