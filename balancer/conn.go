package balancer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"
)

// errIdle ends a relay whose connection saw no data for idle_timeout.
var errIdle = errors.New("idle timeout")

// session is one client connection from accept to its end: what it holds
// (a frontend slot, a per-source count, a backend, a live pair) and what its
// relay counted. The relay's two directions run on goroutines of their own
// and the second to finish ends the session, so the goroutine that accepted
// and connected goes back to the frontend at once, and an idle connection
// keeps only two small goroutine stacks.
type session struct {
	fe     *frontend
	route  *route
	client *net.TCPConn
	server *net.TCPConn
	src    net.Addr // the client as the frontend sees it (PROXY header's source)

	sourceIP   netip.Addr
	holdSource bool     // counted in fe.perSource under sourceIP
	be         *backend // counted in be.active; nil before connect
	lp         *livePair
	start      time.Time // set when debug logs are on

	upDir, downDir *direction
	up, down       int64 // bytes client→server, server→client
	upErr, dnErr   error
	eofs           atomic.Int32 // directions that reached EOF
	finished       atomic.Int32 // directions that returned
	abortOnce      sync.Once
}

// handle serves one accepted client: admit it (PROXY header, per-source
// limit), connect to a backend, send the PROXY header if asked, and start
// the relay, which ends the session when both directions are done.
func (f *frontend) handle(client *net.TCPConn) {
	s := &session{fe: f, route: f.route.Load(), client: client}
	if !s.open() {
		s.end()
		return
	}
	s.relay(s.upDir, &s.up, &s.upErr)
	s.relay(s.downDir, &s.down, &s.dnErr)
}

// open takes the session up to the relay. On false the client has been
// refused or reset, and end releases what open acquired.
func (s *session) open() bool {
	f, r := s.fe, s.route
	pr, ok := f.admit(s.client, r)
	if !ok {
		return false
	}
	s.src = pr.src
	if r.perSource > 0 {
		s.sourceIP, _ = addrIP(pr.src)
		if !f.perSource.acquire(s.sourceIP, r.perSource) {
			f.refuse(s.client, refusedPerSource)
			return false
		}
		s.holdSource = true
	}
	s.be, s.server = f.connect(pr.src, r.pool)
	if s.server == nil {
		f.refuse(s.client, refusedNoBackend)
		return false
	}
	var err error
	if s.upDir, err = newDirection(s.server, s.client); err == nil {
		s.downDir, err = newDirection(s.client, s.server)
	}
	if err != nil {
		f.log.Warn("relay setup failed", zap.String("backend", s.be.addr), zap.Error(err))
		_ = s.server.Close()
		reset(s.client)
		return false
	}
	var header []byte
	if r.pool.proxyVersion != 0 {
		h := proxyproto.HeaderProxyFromAddrs(r.pool.proxyVersion, pr.src, pr.dst)
		if header, err = h.Format(); err != nil {
			f.log.Warn("build PROXY header failed", zap.String("backend", s.be.addr), zap.Error(err))
			_ = s.server.Close()
			reset(s.client)
			return false
		}
	}
	// Past the grace period, Shutdown cuts every live pair; finish waits for
	// a cut in progress, so no close outlives the session.
	s.lp = &livePair{client: s.client, server: s.server, be: s.be, fe: f, header: uint64(len(header)), wake: s.wakeParked}
	f.b.live.add(s.lp)
	s.up = int64(len(pr.early))
	if first := append(header, pr.early...); len(first) > 0 {
		if _, err := s.server.Write(first); err != nil {
			f.log.Warn("write PROXY header or early data failed", zap.String("backend", s.be.addr), zap.Error(err))
			_ = s.server.Close()
			reset(s.client)
			return false
		}
	}
	if f.log.Core().Enabled(zap.DebugLevel) {
		s.start = time.Now()
	}
	return true
}

// leg is one direction of a session's relay and what it counts.
type leg struct {
	s     *session
	d     *direction
	count *int64
	errp  *error
	wait  time.Duration // until the next look at how long the connection has been quiet; 0: none
}

// relay starts one direction on a goroutine of its own. The direction is
// counted in connWG from here until it ends, parked or not.
func (s *session) relay(d *direction, count *int64, errp *error) {
	l := &leg{s: s, d: d, count: count, errp: errp, wait: parkAfter}
	if idle := s.route.idleTimeout; idle > 0 {
		l.wait = min(idle, parkAfter)
	}
	d.carryOn = l.carry
	s.fe.b.connWG.Add(1)
	go l.carry(0)
}

// carry copies until the direction ends, or parks it. A read deadline
// bounds each stretch of copying: when it fires, the kernel's TCP_INFO of
// the client socket says how long ago data last moved either way. Quiet
// for idle_timeout: the connection is closed. Quiet for parkAfter: the
// direction parks (its goroutine returns; the parker calls carry again
// when src has something, or the idle timeout's rest has passed). Else the
// deadline is armed for what is left and the copy goes on. An active
// connection costs one deadline and one getsockopt per parkAfter.
func (l *leg) carry(why resumeReason) {
	idle := l.s.route.idleTimeout
	look := why == resumeTimer
	for {
		if !look {
			var deadline time.Time
			if l.wait > 0 {
				deadline = time.Now().Add(l.wait)
			}
			if err := l.d.src.SetReadDeadline(deadline); err != nil {
				l.finish(fmt.Errorf("arm idle deadline: %w", err))
				return
			}
			n, err := l.d.copy()
			*l.count += n
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				l.finish(err)
				return
			}
		}
		look = false
		quiet, err := quietFor(l.s.client)
		if err != nil {
			l.finish(err)
			return
		}
		var left time.Duration // of the idle timeout; 0: none
		if idle > 0 {
			if quiet >= idle {
				l.finish(errIdle)
				return
			}
			left = idle - quiet
		}
		if quiet >= parkAfter && l.s.fe.b.parker.park(l.d, left) {
			return
		}
		l.wait = left
		if quiet < parkAfter && (left == 0 || parkAfter-quiet < left) {
			l.wait = parkAfter - quiet
		}
	}
}

// finish ends the direction. The first direction to reach EOF half-closes
// its destination (CloseWrite) so the peer sees the end while the other
// direction goes on. The second leaves its FIN to the final Close: the
// first direction has read that socket to EOF, so its receive queue is
// empty and close(2) sends the same FIN as shutdown(2) would, one syscall
// fewer per connection. A direction that fails closes both sockets, which
// ends the other one too. The second direction to end ends the session.
func (l *leg) finish(err error) {
	s := l.s
	s.fe.b.parker.forget(l.d)
	if err == nil && s.eofs.Add(1) == 1 {
		err = l.d.dst.CloseWrite()
	}
	if err != nil {
		s.abort()
	}
	*l.errp = err
	if s.finished.Add(1) == 2 {
		s.abort()
		s.end()
	}
	s.fe.b.connWG.Done()
}

// abort closes both sockets once, which ends both directions.
func (s *session) abort() {
	s.abortOnce.Do(func() {
		_ = s.client.Close()
		if s.server != nil {
			_ = s.server.Close()
		}
		s.wakeParked()
	})
}

// wakeParked resumes a parked direction after its sockets were closed: it
// holds no goroutine that the close could wake.
func (s *session) wakeParked() {
	for _, d := range []*direction{s.upDir, s.downDir} {
		if d != nil {
			d.resume(resumeClosed)
		}
	}
}

// end releases what the session holds, counts and logs how it ended.
func (s *session) end() {
	f := s.fe
	if s.lp != nil {
		f.b.live.finish(s.lp, s.up, s.down)
		err := errors.Join(s.upErr, s.dnErr)
		if errors.Is(err, errIdle) {
			f.idleClosed.Add(1)
		}
		if !s.start.IsZero() {
			f.log.Debug("connection closed", zap.Stringer("client", s.src), zap.String("backend", s.be.addr),
				zap.Int64("bytes_up", s.up), zap.Int64("bytes_down", s.down),
				zap.Duration("duration", time.Since(s.start)), zap.Error(err))
		}
	}
	if s.be != nil {
		s.be.active.Add(-1)
	}
	if s.holdSource {
		f.perSource.release(s.sourceIP)
	}
	f.active.Add(-1)
}

// admit returns the client as the frontend sees it: the socket's peer, or
// on an accept_proxy frontend the PROXY header's source, which only a
// trusted sender may put first. A client it refuses is reset and counted.
func (f *frontend) admit(client *net.TCPConn, r *route) (peer, bool) {
	ap := r.acceptProxy
	if ap == nil {
		return peer{src: client.RemoteAddr(), dst: client.LocalAddr()}, true
	}
	var pr peer
	err := errUntrusted
	if trusted(client.RemoteAddr(), ap.From) {
		pr, err = readProxyHeader(f.b.hardCtx, client, ap.Timeout)
	}
	if err != nil {
		why := proxyRefusal(err)
		f.log.Debug("connection refused", zap.Stringer("client", client.RemoteAddr()),
			zap.String("reason", refusalNames[why]), zap.Error(err))
		f.refuse(client, why)
		return peer{}, false
	}
	return pr, true
}

// connect dials backends picked by the algorithm of p (one version of the
// pool, whatever a reload does meanwhile) until one answers, trying each at
// most once. The client has sent nothing to anyone yet, so a retry is
// invisible to it. It returns a nil conn when none answered.
func (f *frontend) connect(client net.Addr, p *pool) (*backend, *net.TCPConn) {
	key := clientKey(client)
	d := net.Dialer{Timeout: p.connectTimeout, KeepAlive: -1}
	d.SetMultipathTCP(false)
	var t tried
	for {
		i := p.pick(key, t)
		if i < 0 {
			return nil, nil
		}
		be := p.backends[i]
		be.active.Add(1)
		start := time.Now()
		c, err := d.DialContext(f.b.hardCtx, "tcp", be.addr)
		if err == nil {
			be.connectTime.Observe(time.Since(start).Seconds())
			be.total.Add(1)
			if r := f.b.reporter; r != nil {
				r.ConnectSucceeded(p.name, be.addr)
			}
			return be, c.(*net.TCPConn)
		}
		be.active.Add(-1)
		if f.b.hardCtx.Err() != nil { // cut by Shutdown: not the backend's fault
			return nil, nil
		}
		be.connectErrors.Add(1)
		if r := f.b.reporter; r != nil {
			r.ConnectFailed(p.name, be.addr)
		}
		f.log.Warn("backend connect failed", zap.String("pool", p.name), zap.String("backend", be.addr), zap.Error(err))
		if t == nil {
			t = make(tried, len(p.backends))
		}
		t[i] = true
	}
}
