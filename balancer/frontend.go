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

// frontend is one listener feeding one pool.
type frontend struct {
	b    *Balancer
	cfg  FrontendConfig
	pool *pool
	log  *zap.Logger
	ln   *net.TCPListener // set by listen, under b.mu

	active           atomic.Int64
	accepted         atomic.Uint64
	refusedMax       atomic.Uint64
	refusedNoBackend atomic.Uint64
	acceptErrors     atomic.Uint64
	idleClosed       atomic.Uint64

	idle        chan *net.TCPConn // unbuffered: serve hands a connection to a waiting worker
	idleWorkers atomic.Int32      // workers committed to receive on idle
}

func newFrontend(b *Balancer, fc FrontendConfig, p *pool) *frontend {
	return &frontend{b: b, cfg: fc, pool: p, log: b.log.With(zap.String("frontend", fc.Name)),
		idle: make(chan *net.TCPConn)}
}

// listen binds the frontend's address.
func (f *frontend) listen() error {
	lc := net.ListenConfig{Control: listenControl, KeepAlive: -1} // keepalive comes from the listener
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", f.cfg.Listen)
	if err != nil {
		return fmt.Errorf("frontend %q: %w", f.cfg.Name, err)
	}
	f.ln = ln.(*net.TCPListener)
	return nil
}

// serve accepts until the listener is closed. Accept errors never end it:
// it pauses with exponential backoff, so a full file table is not a busy loop.
func (f *frontend) serve() {
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
		if n := f.active.Add(1); f.cfg.MaxConnections > 0 && n > int64(f.cfg.MaxConnections) {
			f.active.Add(-1)
			f.refusedMax.Add(1)
			reset(c)
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
// for the next connection until every accept loop has ended. Reusing a
// goroutine skips creating one and regrowing its stack: a new goroutine
// starts with 2 KiB, and connect's call chain made the runtime copy it
// larger for every connection.
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
		case <-f.b.acceptDone: // no serve left to send
			f.idleWorkers.Add(-1)
			return
		}
	}
}

// reset closes c with an RST (linger 0) so a refused client learns at once.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}
