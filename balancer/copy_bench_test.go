package balancer

import (
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bufferCopy is the alternative to pipe that STYLE.md asks to measure: a
// plain loop through a 32 KiB user-space buffer. The wrappers hide ReadFrom
// and WriteTo so io.CopyBuffer cannot fall back to splice.
func bufferCopy(dst, src *net.TCPConn) (int64, error) {
	buf := make([]byte, 32<<10)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
}

// adaptiveCopy is the shipped copy path: direction.copy.
func adaptiveCopy(dst, src *net.TCPConn) (int64, error) {
	d, err := newDirection(dst, src)
	if err != nil {
		return 0, err
	}
	return d.copy()
}

// spliceCopy is io.Copy between two bare *net.TCPConn: splice(2) for
// every byte, with a pipe held from the first byte to EOF.
func spliceCopy(dst, src *net.TCPConn) (int64, error) { return io.Copy(dst, src) }

// BenchmarkPipe relays b.N MiB per stream over loopback TCP: sender → copy →
// sink, the copy being pipe (splice) or bufferCopy.
func BenchmarkPipe(b *testing.B) {
	for _, s := range []struct {
		name string
		copy func(dst, src *net.TCPConn) (int64, error)
	}{{"adaptive", adaptiveCopy}, {"splice", spliceCopy}, {"buffer32k", bufferCopy}} {
		for _, streams := range []int{1, 8} {
			b.Run(s.name+"/streams="+strconv.Itoa(streams), func(b *testing.B) {
				benchCopy(b, s.copy, streams)
			})
		}
	}
}

// loopbackListener listens on 127.0.0.1 until the test ends.
func loopbackListener(tb testing.TB) *net.TCPListener {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	return ln
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(b testing.TB, ln *net.TCPListener) (near, far *net.TCPConn) {
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		b.Fatal(err)
	}
	a, err := ln.AcceptTCP()
	if err != nil {
		b.Fatal(err)
	}
	return c, a
}

func benchCopy(b *testing.B, copyFn func(dst, src *net.TCPConn) (int64, error), streams int) {
	ln := loopbackListener(b)
	const chunk = 1 << 20
	b.SetBytes(chunk * int64(streams))
	type stream struct{ sender, src, dst, sink *net.TCPConn }
	ss := make([]stream, streams)
	for i := range ss {
		ss[i].sender, ss[i].src = tcpPair(b, ln)
		ss[i].dst, ss[i].sink = tcpPair(b, ln)
	}
	data := make([]byte, chunk)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() {
			defer s.sender.Close()
			for range b.N {
				if _, err := s.sender.Write(data); err != nil {
					b.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			defer s.src.Close()
			defer s.dst.Close()
			if _, err := copyFn(s.dst, s.src); err != nil {
				b.Error(err)
			}
		})
		wg.Go(func() {
			defer s.sink.Close()
			n, err := io.Copy(io.Discard, s.sink)
			if err != nil || n != int64(b.N)*chunk {
				b.Errorf("sink got %d bytes, %v; want %d", n, err, int64(b.N)*chunk)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	mib := float64(b.N) * float64(streams)
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/mib, "cpu-µs/MiB")
}

// cpuTime is the process's user+system CPU time: on a 2-core host the
// relay's CPU per byte matters as much as its throughput.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProxyConnections opens, greets and closes one client connection
// per op through a Balancer: the new-connection rate of accept, pick,
// connect and teardown.
func BenchmarkProxyConnections(b *testing.B) {
	be := startBackend(b, namedEcho("a"))
	bal, _ := startBalancer(b, poolOf("round_robin", be), FrontendConfig{}, nil)
	addr := bal.Addr("fe").String()
	buf := make([]byte, 2)
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
}

// BenchmarkRelayMessage relays one request and its echo per op, of 64 B,
// 4 KiB and 64 KiB, through both directions of a relay: client → copy →
// echo server → copy → client, each copy being one of the strategies.
func BenchmarkRelayMessage(b *testing.B) {
	for _, s := range []struct {
		name string
		copy func(dst, src *net.TCPConn) (int64, error)
	}{{"adaptive", adaptiveCopy}, {"splice", spliceCopy}, {"buffer32k", bufferCopy}} {
		for _, size := range []int{64, 4 << 10, 64 << 10} {
			b.Run(s.name+"/size="+strconv.Itoa(size), func(b *testing.B) {
				benchMessages(b, s.copy, size)
			})
		}
	}
}

func benchMessages(b *testing.B, copyFn func(dst, src *net.TCPConn) (int64, error), size int) {
	ln := loopbackListener(b)
	client, front := tcpPair(b, ln)
	back, server := tcpPair(b, ln)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { // the echo server, through a plain buffer
		defer server.Close()
		bufferEcho(server)
	})
	wg.Go(func() {
		defer back.Close()
		_, _ = copyFn(back, front)
		_ = back.CloseWrite()
	})
	wg.Go(func() {
		defer front.Close()
		_, _ = copyFn(front, back)
	})
	defer client.Close()
	msg := make([]byte, size)
	got := make([]byte, size)
	b.SetBytes(int64(size))
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for range b.N {
		if _, err := client.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(client, got); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/op")
	_ = client.CloseWrite()
}
