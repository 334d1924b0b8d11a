package bench

import (
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const testRun = 200 * time.Millisecond

func newTestBackend(t *testing.T) *Backend {
	t.Helper()
	b, err := NewBackend("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// fakeServer accepts connections and hands each to handle; it stops at the
// end of the test.
func fakeServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestBulkCountsBytesTheSinkConfirmed(t *testing.T) {
	b := newTestBackend(t)
	for _, streams := range []int{1, 4} {
		r, err := Bulk(context.Background(), b.Addr(), streams, testRun)
		if err != nil {
			t.Fatalf("%d streams: %v", streams, err)
		}
		if r.Bytes < int64(streams)*bulkChunk-int64(streams) || r.Elapsed < testRun {
			t.Errorf("%d streams: %d bytes in %v, want at least one chunk per stream over the run", streams, r.Bytes, r.Elapsed)
		}
		t.Logf("%d streams: %.0f MB/s", streams, r.MBps())
	}
}

func TestBulkFailsWhenBytesGoMissing(t *testing.T) {
	// A "proxy" that forwards nothing and reports a count of zero.
	addr := fakeServer(t, func(c net.Conn) {
		io.Copy(io.Discard, c)
		c.Write(make([]byte, 8))
	})
	_, err := Bulk(context.Background(), addr, 1, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "sink received 0 bytes") {
		t.Fatalf("err = %v, want a byte count mismatch", err)
	}
}

func TestConnRateCompletesWholeCycles(t *testing.T) {
	b := newTestBackend(t)
	r := ConnRate(context.Background(), b.Addr(), 4, testRun)
	if r.Count == 0 || r.Errors != 0 {
		t.Fatalf("count %d errors %d (first %v), want completions and no errors", r.Count, r.Errors, r.FirstErr)
	}
	if !slices.IsSorted(r.Latencies) || int64(len(r.Latencies)) != r.Count {
		t.Errorf("latencies: %d, sorted %v; want one per completion, sorted", len(r.Latencies), slices.IsSorted(r.Latencies))
	}
	t.Logf("%.0f conn/s, p50 %v, p99 %v", r.PerSecond(), r.P(50), r.P(99))
}

func TestConnRateCountsAWrongReplyAsAnError(t *testing.T) {
	addr := fakeServer(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, connRequestSize))
		c.Write([]byte("short"))
	})
	r := ConnRate(context.Background(), addr, 2, 50*time.Millisecond)
	if r.Count != 0 || r.Errors == 0 || !strings.Contains(r.FirstErr.Error(), "got 5 bytes") {
		t.Fatalf("count %d errors %d first %v, want only errors about a 5-byte reply", r.Count, r.Errors, r.FirstErr)
	}
}

func TestPairsVerifiesEveryEcho(t *testing.T) {
	b := newTestBackend(t)
	r, err := Pairs(context.Background(), b.Addr(), 4, testRun)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count == 0 || r.Errors != 0 {
		t.Fatalf("count %d errors %d (first %v), want pairs and no errors", r.Count, r.Errors, r.FirstErr)
	}
	if r.P(50) > r.P(99) || r.P(99) <= 0 {
		t.Errorf("p50 %v p99 %v: want 0 < p50 <= p99", r.P(50), r.P(99))
	}
	t.Logf("%.0f pairs/s, p50 %v, p99 %v", r.PerSecond(), r.P(50), r.P(99))
}

func TestPairsRejectsAWrongEcho(t *testing.T) {
	addr := fakeServer(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 1)) // the mode byte
		buf := make([]byte, PairSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(make([]byte, PairSize)) // zeros, not the request
		}
	})
	r, err := Pairs(context.Background(), addr, 1, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// The first request carries sequence number 0, which echoes as zeros;
	// the second must be caught.
	if r.Errors != 1 || !strings.Contains(r.FirstErr.Error(), "echo differs") {
		t.Fatalf("errors %d first %v, want one echo mismatch", r.Errors, r.FirstErr)
	}
}

func TestOpenIdleWaitsUntilTheBackendHoldsAll(t *testing.T) {
	b := newTestBackend(t)
	cs, err := OpenIdle(context.Background(), b.Addr(), 100, b)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 100 || b.IdleConns() != 100 {
		t.Fatalf("%d connections, backend holds %d; want 100 and 100", len(cs), b.IdleConns())
	}
	for _, c := range cs {
		c.Close()
	}
	if err := waitForTest(func() bool { return b.IdleConns() == 0 }); err != nil {
		t.Fatalf("backend still holds %d after the client closed all: %v", b.IdleConns(), err)
	}
}

func TestBackendCloseEndsOpenConnections(t *testing.T) {
	b, err := NewBackend("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{modeIdle})
	if err := waitForTest(func() bool { return b.IdleConns() == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b.Close() // twice is fine
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read after backend Close = %d, %v; want EOF", n, err)
	}
}
