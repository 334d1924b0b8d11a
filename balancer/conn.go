package balancer

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"
)

// errIdle ends a relay whose connection saw no data for idle_timeout.
var errIdle = errors.New("idle timeout")

// handle serves one accepted client: admit it (PROXY header, per-source
// limit), connect to a backend, send the PROXY header if asked, relay until
// both directions end.
func (f *frontend) handle(client *net.TCPConn) {
	defer f.active.Add(-1)
	r := f.route.Load()
	pr, ok := f.admit(client, r)
	if !ok {
		return
	}
	if r.perSource > 0 {
		ip, _ := addrIP(pr.src)
		if !f.perSource.acquire(ip, r.perSource) {
			f.refuse(client, refusedPerSource)
			return
		}
		defer f.perSource.release(ip)
	}
	be, server := f.connect(pr.src, r.pool)
	if server == nil {
		f.refuse(client, refusedNoBackend)
		return
	}
	defer be.active.Add(-1)
	var header []byte
	if r.pool.proxyVersion != 0 {
		h := proxyproto.HeaderProxyFromAddrs(r.pool.proxyVersion, pr.src, pr.dst)
		var err error
		if header, err = h.Format(); err != nil {
			f.log.Warn("build PROXY header failed", zap.String("backend", be.addr), zap.Error(err))
			_ = server.Close()
			reset(client)
			return
		}
	}
	// Past the grace period, Shutdown cuts every live pair; finish waits for
	// a cut in progress, so no close outlives handle.
	lp := &livePair{client: client, server: server, be: be, fe: f, header: uint64(len(header))}
	f.b.live.add(lp)
	up, down := int64(len(pr.early)), int64(0)
	defer func() { f.b.live.finish(lp, up, down) }()

	if first := append(header, pr.early...); len(first) > 0 {
		if _, err := server.Write(first); err != nil {
			f.log.Warn("write PROXY header or early data failed", zap.String("backend", be.addr), zap.Error(err))
			_ = server.Close()
			reset(client)
			return
		}
	}
	debug := f.log.Core().Enabled(zap.DebugLevel)
	var start time.Time
	if debug {
		start = time.Now()
	}
	relayedUp, down, err := relay(client, server, r.idleTimeout)
	up += relayedUp
	if errors.Is(err, errIdle) {
		f.idleClosed.Add(1)
	}
	if debug {
		f.log.Debug("connection closed", zap.Stringer("client", pr.src), zap.String("backend", be.addr),
			zap.Int64("bytes_up", up), zap.Int64("bytes_down", down),
			zap.Duration("duration", time.Since(start)), zap.Error(err))
	}
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

// relay copies both ways between client and server until both directions
// end. The first direction to reach EOF half-closes its destination
// (CloseWrite) so the peer sees the end while the other direction goes on.
// The second leaves its FIN to the final Close: the first direction has read
// that socket to EOF, so its receive queue is empty and close(2) sends the
// same FIN as shutdown(2) would, one syscall fewer per connection. A
// direction that fails closes both sockets, which ends the other one too.
// up counts client→server bytes, down server→client.
func relay(client, server *net.TCPConn, idle time.Duration) (up, down int64, err error) {
	var abortOnce sync.Once
	abort := func() {
		abortOnce.Do(func() {
			_ = client.Close()
			_ = server.Close()
		})
	}
	var ended atomic.Int32 // directions that reached EOF
	half := func(dst, src *net.TCPConn) (int64, error) {
		n, err := copyIdle(dst, src, client, idle)
		if err == nil && ended.Add(1) == 1 {
			err = dst.CloseWrite()
		}
		if err != nil {
			abort()
		}
		return n, err
	}
	var upErr error
	var wg sync.WaitGroup
	wg.Go(func() { up, upErr = half(server, client) })
	down, err = half(client, server)
	wg.Wait()
	abort()
	return up, down, errors.Join(upErr, err)
}

// copyIdle copies src to dst with pipe. With an idle timeout it arms a read
// deadline on src: io.Copy over splice has no per-read hook, so instead, when
// the deadline fires, the kernel's TCP_INFO of the client socket says how
// long ago data last moved either way. If that is idle or more the
// connection is idle; otherwise the deadline is re-armed for the rest of the
// idle time and the copy goes on. An active connection costs one deadline
// and one getsockopt per idle period; an idle one is closed within a few
// milliseconds of idle.
func copyIdle(dst, src, client *net.TCPConn, idle time.Duration) (int64, error) {
	if idle <= 0 {
		return pipe(dst, src)
	}
	var total int64
	wait := idle
	for {
		if err := src.SetReadDeadline(time.Now().Add(wait)); err != nil {
			return total, fmt.Errorf("arm idle deadline: %w", err)
		}
		n, err := pipe(dst, src)
		total += n
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		quiet, qerr := quietFor(client)
		if qerr != nil {
			return total, qerr
		}
		if quiet >= idle {
			return total, errIdle
		}
		wait = idle - quiet
	}
}
