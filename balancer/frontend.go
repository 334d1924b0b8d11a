package balancer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Client-side TCP keepalive: probes after 30 s of silence, every 10 s, give
// up after 3, so dead clients free their connection slots. It is set once on
// the listening socket, which accepted sockets inherit on Linux: per
// connection that saves the four setsockopt calls Go would make (measured
// 13-23 µs of a ~200 µs connection in bench/). Backend sockets carry no
// keepalive, as in HAProxy without srvtcpka: a dead client ends the pair,
// and idle_timeout ends a pair whose backend went silent.
const (
	keepAliveIdle     = 30 * time.Second
	keepAliveInterval = 10 * time.Second
	keepAliveCount    = 3
)

// Accept-error backoff bounds: temporary errors such as EMFILE are retried
// after a pause that doubles from acceptBackoffMin up to acceptBackoffMax.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// frontend is one listener feeding one pool. It lives, bound and accepting,
// for as long as the configuration has a frontend of its name and listen
// address; what it feeds and its limits are its route, replaced by
// Reconfigure.
type frontend struct {
	b      *Balancer
	name   string
	listen string
	log    *zap.Logger
	route  atomic.Pointer[route]
	ln     *net.TCPListener // set by bind, under b.mu
	served chan struct{}    // closed when serve returns: idle workers end

	active       atomic.Int64
	accepted     atomic.Uint64
	refused      [refusalKinds]atomic.Uint64
	acceptErrors atomic.Uint64
	idleClosed   atomic.Uint64
	// perSource counts live connections by source for
	// max_connections_per_source; it lives as long as the frontend, so a
	// reload that keeps the frontend keeps the counts.
	perSource sourceCounts

	idle        chan *net.TCPConn // unbuffered: serve hands a connection to a waiting worker
	idleWorkers atomic.Int32      // workers committed to receive on idle

	// retired is set, under the liveSet's mutex, once the frontend has been
	// removed and its drain grace is over: its pairs are cut, and a pair
	// that links later is closed at once.
	retired bool
}

// route is where a frontend's new connections go and under which limits;
// never changed once built. Each connection loads it once.
type route struct {
	pool           *pool
	maxConnections int64         // 0 = unlimited
	perSource      int64         // max_connections_per_source; 0 = unlimited
	idleTimeout    time.Duration // 0 = never
	acceptProxy    *AcceptProxyConfig
}

func newFrontend(b *Balancer, name, listen string) *frontend {
	return &frontend{b: b, name: name, listen: listen, log: b.log.With(zap.String("frontend", name)),
		served: make(chan struct{}), idle: make(chan *net.TCPConn)}
}

// bind binds the frontend's address.
func (f *frontend) bind() error {
	lc := net.ListenConfig{Control: listenControl, KeepAlive: -1} // keepalive comes from the listener
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", f.listen)
	if err != nil {
		return fmt.Errorf("frontend %q: %w", f.name, err)
	}
	f.ln = ln.(*net.TCPListener)
	return nil
}

// serve accepts until the listener is closed. Accept errors never end it:
// it pauses with exponential backoff, so a full file table is not a busy loop.
func (f *frontend) serve() {
	defer close(f.served)
	var backoff time.Duration
	for {
		c, err := f.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			f.acceptErrors.Add(1)
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			f.log.Warn("accept failed, backing off", zap.Error(err), zap.Duration("backoff", backoff))
			t := time.NewTimer(backoff)
			select {
			case <-f.b.stopAccept:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		f.accepted.Add(1)
		if n, limit := f.active.Add(1), f.route.Load().maxConnections; limit > 0 && n > limit {
			f.active.Add(-1)
			f.refuse(c, refusedMaxConnections)
			continue
		}
		if f.idleWorkers.Load() > 0 {
			// Each count is a worker committed to receive one connection,
			// and only serve takes counts, so this send cannot block long.
			f.idleWorkers.Add(-1)
			f.idle <- c
		} else {
			f.b.connWG.Go(func() { f.work(c) })
		}
	}
}

// maxIdleWorkers bounds the connection goroutines kept waiting for the next
// connection on a frontend.
const maxIdleWorkers = 64

// work serves c, then, while fewer than maxIdleWorkers others wait, waits
// for the next connection until the frontend's accept loop has ended.
// Reusing a goroutine skips creating one and regrowing its stack: a new
// goroutine starts with 2 KiB, and connect's call chain made the runtime
// copy it larger for every connection.
func (f *frontend) work(c *net.TCPConn) {
	for {
		f.handle(c)
		for {
			n := f.idleWorkers.Load()
			if n >= maxIdleWorkers {
				return
			}
			if f.idleWorkers.CompareAndSwap(n, n+1) {
				break
			}
		}
		select {
		case c = <-f.idle: // serve took the count
		case <-f.served: // no serve left to send
			f.idleWorkers.Add(-1)
			return
		}
	}
}

// refuse resets c and counts why.
func (f *frontend) refuse(c *net.TCPConn, why refusal) {
	f.refused[why].Add(1)
	reset(c)
}

// reset closes c with an RST (linger 0) so a refused client learns at once.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
