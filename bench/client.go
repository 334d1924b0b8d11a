package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// PairSize is the size of one request and of its echoed reply in Pairs.
const PairSize = 64

// ioTimeout bounds every single read or write of the client, so a stuck
// proxy fails the run instead of hanging it.
const ioTimeout = 10 * time.Second

var dialer = net.Dialer{Timeout: 5 * time.Second}

// BulkResult is the outcome of one bulk upload run.
type BulkResult struct {
	Bytes   int64         // bytes the sink confirmed having received
	Elapsed time.Duration // from the first dial to the last confirmation
}

// MBps is the throughput in megabytes (10^6 bytes) per second.
func (r BulkResult) MBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Elapsed.Seconds()
}

// Bulk uploads to the sink behind addr on streams parallel connections for
// about d. Each stream writes 64 KiB chunks until d has passed, half-closes,
// and waits for the sink's byte count, which must equal what it sent: the
// figure counts only bytes that went all the way through, and a proxy that
// loses data or mishandles half-close fails the run.
func Bulk(ctx context.Context, addr string, streams int, d time.Duration) (BulkResult, error) {
	start := time.Now()
	deadline := start.Add(d)
	counts := make([]int64, streams)
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() { counts[i], errs[i] = bulkStream(ctx, addr, deadline) })
	}
	wg.Wait()
	res := BulkResult{Elapsed: time.Since(start)}
	for i := range streams {
		res.Bytes += counts[i]
	}
	return res, errors.Join(errs...)
}

func bulkStream(ctx context.Context, addr string, deadline time.Time) (int64, error) {
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("bulk dial %s: %w", addr, err)
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })()

	buf := make([]byte, bulkChunk)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	buf[0] = modeSink
	first := true
	var sent int64
	for first || time.Now().Before(deadline) {
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		n, err := c.Write(buf)
		if first {
			n = max(0, n-1) // the mode byte is not payload
			first = false
			buf[0] = 0
		}
		sent += int64(n)
		if err != nil {
			return 0, fmt.Errorf("bulk write to %s after %d bytes: %w", addr, sent, err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, fmt.Errorf("bulk half-close to %s: %w", addr, err)
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	var reply [8]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return 0, fmt.Errorf("bulk read count from %s after sending %d bytes: %w", addr, sent, err)
	}
	got := int64(binary.BigEndian.Uint64(reply[:]))
	if got != sent {
		return 0, fmt.Errorf("bulk via %s: sink received %d bytes, client sent %d", addr, got, sent)
	}
	return got, nil
}

// LatencyResult is the outcome of a run of many timed operations.
type LatencyResult struct {
	Count     int64           // operations that completed correctly
	Errors    int64           // operations that failed (dial, I/O or wrong reply)
	FirstErr  error           // the first failure, for the report
	Elapsed   time.Duration   // wall time of the run
	Latencies []time.Duration // one per completed operation, sorted
}

// PerSecond is the rate of completed operations.
func (r LatencyResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Count) / r.Elapsed.Seconds()
}

// P returns the p-th percentile latency.
func (r LatencyResult) P(p float64) time.Duration { return Percentile(r.Latencies, p) }

// workerResult is what one worker of a latency run collects.
type workerResult struct {
	lat    []time.Duration
	errors int64
	first  error
}

func (w *workerResult) fail(err error) {
	w.errors++
	if w.first == nil {
		w.first = err
	}
}

// runWorkers starts n workers at once, each running work(i, its result,
// the time to stop), and merges what they collected. work loops by itself
// until stop or until ctx is done.
func runWorkers(n int, d time.Duration, work func(i int, w *workerResult, stop time.Time)) LatencyResult {
	results := make([]workerResult, n)
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { work(i, &results[i], stop) })
	}
	wg.Wait()
	res := LatencyResult{Elapsed: time.Since(start)}
	for i := range results {
		r := &results[i]
		res.Latencies = append(res.Latencies, r.lat...)
		res.Errors += r.errors
		if res.FirstErr == nil {
			res.FirstErr = r.first
		}
	}
	slices.Sort(res.Latencies)
	res.Count = int64(len(res.Latencies))
	return res
}

// ConnRate opens new connections to addr on workers parallel workers for
// about d: connect, send a 16-byte request, read the 16-byte reply until the
// server's close arrives, close. Latency is the whole cycle.
func ConnRate(ctx context.Context, addr string, workers int, d time.Duration) LatencyResult {
	req := make([]byte, connRequestSize)
	req[0] = modeConn
	return runWorkers(workers, d, func(_ int, w *workerResult, stop time.Time) {
		for ctx.Err() == nil && time.Now().Before(stop) {
			t0 := time.Now()
			if err := connOnce(ctx, addr, req); err != nil {
				w.fail(err)
				continue
			}
			w.lat = append(w.lat, time.Since(t0))
		}
	})
}

// ConnOnce makes one exchange of the connection-rate workload through
// addr: a small request, a small reply, the backend's close.
func ConnOnce(ctx context.Context, addr string) error {
	req := make([]byte, connRequestSize)
	req[0] = modeConn
	return connOnce(ctx, addr, req)
}

func connOnce(ctx context.Context, addr string, req []byte) error {
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("conn dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("conn write to %s: %w", addr, err)
	}
	var reply [connReplySize + 1]byte
	n, err := io.ReadFull(c, reply[:])
	if n != connReplySize || !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("conn reply from %s: got %d bytes (want %d then EOF): %v", addr, n, connReplySize, err)
	}
	return nil
}

// Pairs opens conns persistent connections to the echo server behind addr
// and, on each, sends a PairSize message and waits for its echo, over and
// over, for about d. Every echo is checked. Latency is one round trip.
func Pairs(ctx context.Context, addr string, conns int, d time.Duration) (LatencyResult, error) {
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range conns {
		c, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return LatencyResult{}, fmt.Errorf("pairs dial %s: %w", addr, err)
		}
		cs = append(cs, c)
		if _, err := c.Write([]byte{modeEcho}); err != nil {
			return LatencyResult{}, fmt.Errorf("pairs hello to %s: %w", addr, err)
		}
	}
	defer context.AfterFunc(ctx, func() {
		for _, c := range cs {
			c.Close()
		}
	})()
	res := runWorkers(conns, d, func(i int, w *workerResult, stop time.Time) {
		c := cs[i]
		msg := make([]byte, PairSize)
		got := make([]byte, PairSize)
		for i := 0; ctx.Err() == nil && time.Now().Before(stop); i++ {
			binary.BigEndian.PutUint64(msg, uint64(i))
			c.SetDeadline(time.Now().Add(ioTimeout))
			t0 := time.Now()
			if _, err := c.Write(msg); err != nil {
				w.fail(fmt.Errorf("pairs write to %s: %w", addr, err))
				return
			}
			if _, err := io.ReadFull(c, got); err != nil {
				w.fail(fmt.Errorf("pairs read from %s: %w", addr, err))
				return
			}
			if !bytes.Equal(msg, got) {
				w.fail(fmt.Errorf("pairs via %s: echo differs from request", addr))
				return
			}
			w.lat = append(w.lat, time.Since(t0))
		}
	})
	return res, nil
}

// OpenIdle opens n idle connections to addr, 64 at a time, and waits until
// the backend holds all of them (so a proxy has both legs of each open). The
// caller must close what is returned, also on error.
func OpenIdle(ctx context.Context, addr string, n int, backend *Backend) ([]net.Conn, error) {
	cs, err := DialIdle(ctx, addr, n)
	if err != nil {
		return cs, err
	}
	err = waitFor(ctx, 30*time.Second, func() bool { return backend.IdleConns() >= int64(n) })
	if err != nil {
		return cs, fmt.Errorf("idle: backend holds %d of %d connections: %w", backend.IdleConns(), n, err)
	}
	return cs, nil
}

// DialIdle opens n idle-mode connections to addr, 64 at a time, without
// waiting for a backend to hold them. The caller must close what is
// returned, also on error.
func DialIdle(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	cs := make([]net.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := dialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				errs[i] = fmt.Errorf("idle dial %s (#%d): %w", addr, i, err)
				return
			}
			cs[i] = c
			if _, err := c.Write([]byte{modeIdle}); err != nil {
				errs[i] = fmt.Errorf("idle hello to %s (#%d): %w", addr, i, err)
			}
		})
	}
	wg.Wait()
	cs = slices.DeleteFunc(cs, func(c net.Conn) bool { return c == nil })
	return cs, errors.Join(errs...)
}

// waitFor polls cond every 20ms until it holds, ctx is done or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
