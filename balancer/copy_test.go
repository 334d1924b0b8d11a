package balancer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// bufferEcho echoes through a small user-space buffer: unlike io.Copy(c, c)
// it never splices, so the backend holds no pipe of its own.
func bufferEcho(c *net.TCPConn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// openFiles counts this process's open sockets and pipe ends.
func openFiles(t *testing.T) (sockets, pipes int) {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case err != nil: // the directory's own descriptor, closed by now
		case strings.HasPrefix(target, "socket:"):
			sockets++
		case strings.HasPrefix(target, "pipe:"):
			pipes++
		}
	}
	return sockets, pipes
}

// roundTrip sends msg through c and checks the echo.
func roundTrip(t *testing.T, c *net.TCPConn, msg []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %d-byte echo: %v", len(msg), err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write %d bytes: %v", len(msg), err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("%d-byte echo differs from what was sent", len(msg))
	}
}

func TestIdleConnectionsHoldTwoDescriptorsEach(t *testing.T) {
	be := startBackend(t, bufferEcho)
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	const n = 200
	socketsBefore, pipesBefore := openFiles(t)
	bulk := bytes.Repeat([]byte("s"), 4*copyBufferSize) // fills the buffer: streams, then goes quiet
	for range n {
		c := dial(t, b)
		roundTrip(t, c, []byte("hello"))
		roundTrip(t, c, bulk)
	}
	waitFor(t, func() bool { return b.live.count() == n })
	// Per connection this process holds the client's socket and the
	// backend's, and the proxy its two. Pipes the pool keeps for the next
	// stream (and, under -race, pipes it dropped that await their cleanup)
	// are not per connection: n connections holding one would be 2n ends.
	sockets, pipes := openFiles(t)
	proxy := sockets - socketsBefore - 2*n
	pipes -= pipesBefore
	t.Logf("%d idle connections: %d proxy sockets, %d pipe ends", n, proxy, pipes)
	if proxy != 2*n {
		t.Fatalf("proxy holds %d sockets for %d idle connections, want 2 each", proxy, n)
	}
	const most = 32
	if pipes > most {
		t.Fatalf("%d pipe ends open with %d idle connections, want at most %d: idle directions hold no pipe", pipes, n, most)
	}
}

func TestCopyMovesEveryByteAtEachSize(t *testing.T) {
	be := startBackend(t, bufferEcho)
	b, reg := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	c := dial(t, b)
	rng := rand.New(rand.NewPCG(1, 2))
	var total int
	for _, size := range []int{1, 64, 4 << 10, copyBufferSize - 1, copyBufferSize, copyBufferSize + 1, 64 << 10, 3 << 20} {
		msg := make([]byte, size)
		for i := range msg {
			msg[i] = byte(rng.Uint32())
		}
		roundTrip(t, c, msg)
		total += size
	}
	_ = c.Close()
	waitFor(t, func() bool { return b.live.count() == 0 })
	for _, dir := range []string{"client_to_backend", "backend_to_client"} {
		got := metricValue(t, reg, "vipd_backend_bytes_total", map[string]string{"pool": "p", "backend": be, "direction": dir})
		if int(got) != total {
			t.Fatalf("%s bytes %v, want %d", dir, got, total)
		}
	}
}

func TestBulkUploadThenHalfCloseGetsTheDigestBack(t *testing.T) {
	be := startBackend(t, func(c *net.TCPConn) {
		h := sha256.New()
		n, err := io.Copy(h, bufio.NewReader(c)) // until the client's half-close
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, strconv.FormatInt(n, 10)+" "+string(h.Sum(nil)))
	})
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	c := dial(t, b)
	data := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read the digest after the half-close: %v", err)
	}
	sum := sha256.Sum256(data)
	if want := strconv.Itoa(len(data)) + " " + string(sum[:]); string(got) != want {
		t.Fatalf("backend saw %q, want the length and digest of what was sent", got)
	}
}

func keptBufferCount() int {
	bufferPool.mu.Lock()
	defer bufferPool.mu.Unlock()
	return len(bufferPool.free)
}

// Every connection ends with a read that sees EOF or an error in each
// direction; a buffer kept by that read is a 64 KiB allocation per direction.
func TestEndedDirectionGivesItsBufferBack(t *testing.T) {
	for _, ending := range []string{"eof", "reset"} {
		t.Run(ending, func(t *testing.T) {
			ln := loopbackListener(t)
			srcPeer, src := tcpPair(t, ln)
			dst, dstPeer := tcpPair(t, ln)
			for _, c := range []*net.TCPConn{src, srcPeer, dst, dstPeer} {
				defer c.Close()
			}
			if _, err := srcPeer.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			if ending == "reset" {
				_ = srcPeer.SetLinger(0)
			}
			_ = srcPeer.Close()
			bufferPool.Put(bufferPool.Get()) // at least one kept, so a lost one shows
			before := keptBufferCount()
			d, err := newDirection(dst, src)
			if err != nil {
				t.Fatal(err)
			}
			n, err := d.copy()
			t.Logf("copy after %s: %d bytes, %v", ending, n, err)
			if ending == "eof" && (n != 2 || err != nil) {
				t.Fatalf("copy moved %d bytes with error %v, want 2 and EOF", n, err)
			}
			if ending == "reset" && err == nil {
				t.Fatal("copy from a reset socket ended without an error")
			}
			if got := keptBufferCount(); got != before {
				t.Fatalf("free list keeps %d buffers after a direction ended by %s, want %d as before: the last read kept one", got, ending, before)
			}
		})
	}
}

// A stream that never waits in the poller yields its P every splice round,
// so goroutines woken meanwhile (Raft's heartbeats) do not wait for the
// runtime's 10 ms preemption. The source is filled before the copy starts,
// so most rounds find bytes queued and do not wait.
func TestStreamYieldsWhenItDoesNotWait(t *testing.T) {
	ln := loopbackListener(t)
	srcPeer, src := tcpPair(t, ln)
	dst, dstPeer := tcpPair(t, ln)
	for _, c := range []*net.TCPConn{src, srcPeer, dst, dstPeer} {
		defer c.Close()
	}
	const size = 16 << 20
	go func() {
		_, _ = srcPeer.Write(make([]byte, size))
		_ = srcPeer.CloseWrite()
	}()
	drained := make(chan int64, 1)
	go func() { n, _ := io.Copy(io.Discard, dstPeer); drained <- n }()
	d, err := newDirection(dst, src)
	if err != nil {
		t.Fatal(err)
	}
	var yields int
	d.yield = func() { yields++ }
	n, err := d.copy()
	if err != nil || n != size {
		t.Fatalf("copy moved %d bytes, %v; want %d and EOF", n, err, size)
	}
	_ = dst.CloseWrite()
	if got := <-drained; got != size {
		t.Fatalf("the destination got %d bytes, want %d", got, size)
	}
	t.Logf("%d yields in %d MiB", yields, size>>20)
	if yields == 0 {
		t.Fatal("a stream of 16 MiB never yielded: a stream that does not wait holds its P until preempted")
	}
}
