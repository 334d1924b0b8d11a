package balancer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// relayGoroutines counts the goroutines copying a direction right now.
func relayGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "balancer.(*leg).carry(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

type client struct {
	c *net.TCPConn
	r *bufio.Reader
}

// parkAll opens n connections through b, exchanges a line on each and
// waits until every relay goroutine has parked.
func parkAll(t *testing.T, b *Balancer, n int) []client {
	t.Helper()
	var out []client
	for range n {
		c, r, _ := greeting(t, b)
		echo(t, c, r, "hello")
		out = append(out, client{c, r})
	}
	if got := relayGoroutines(); got < 2*n {
		t.Fatalf("%d relay goroutines for %d live connections before they went idle, want %d", got, n, 2*n)
	}
	waitFor(t, func() bool { return relayGoroutines() == 0 })
	return out
}

// An idle connection holds no goroutine once it has been quiet for
// parkAfter, and a parked one carries on as before: data both ways, a
// half-close from either side, the backend going away.
func TestIdleConnectionsParkAndCarryOn(t *testing.T) {
	be := startBackend(t, func(c *net.TCPConn) {
		_, _ = io.WriteString(c, "b\n")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // the client's FIN (or a close) ends the backend's side
			}
			if line == "bye\n" {
				_ = c.CloseWrite()
				continue
			}
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	})
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	cs := parkAll(t, b, 4)

	// Data after the park: the readable socket wakes its direction.
	echo(t, cs[0].c, cs[0].r, "after the park")

	// The client half-closes a parked connection: the backend sees the EOF,
	// and what it sends after that still arrives.
	if err := cs[1].c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, cs[1].r)

	// The backend half-closes: the client sees the EOF and can still send.
	if _, err := io.WriteString(cs[2].c, "bye\n"); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, cs[2].r)

	// Parked again after the traffic, and woken again.
	waitFor(t, func() bool { return relayGoroutines() == 0 })
	echo(t, cs[3].c, cs[3].r, "twice parked")
	echo(t, cs[0].c, cs[0].r, "still there")
	for _, c := range cs {
		_ = c.c.Close()
	}
	waitFor(t, func() bool { return b.live.count() == 0 })
}

func expectEOF(t *testing.T, r *bufio.Reader) {
	t.Helper()
	if line, err := r.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("read %q, %v; want EOF", line, err)
	}
}

// A parked connection still ends at its idle timeout: its timer wakes it.
func TestParkedConnectionEndsAtIdleTimeout(t *testing.T) {
	be := startBackend(t, namedEcho("b"))
	const idle = parkAfter + 500*time.Millisecond
	b, reg := startBalancer(t, poolOf("round_robin", be), FrontendConfig{IdleTimeout: idle}, nil)
	cs := parkAll(t, b, 1)
	_ = cs[0].c.SetReadDeadline(time.Now().Add(ioWait))
	expectClosed(t, cs[0].c)
	waitFor(t, func() bool {
		return metricValue(t, reg, "vipd_frontend_idle_timeouts_total", map[string]string{"frontend": "fe"}) == 1
	})
}

// Shutdown past its grace cuts parked connections too: nothing waits for
// a wake that would never come.
func TestShutdownCutsParkedConnections(t *testing.T) {
	be := startBackend(t, namedEcho("b"))
	b, _ := startBalancer(t, poolOf("round_robin", be), FrontendConfig{}, nil)
	cs := parkAll(t, b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("shutdown with 3 parked connections: %v, want the grace's deadline", err)
		}
	case <-time.After(ioWait):
		t.Fatal("shutdown hangs on parked connections")
	}
	for _, c := range cs {
		_ = c.c.SetReadDeadline(time.Now().Add(ioWait))
		expectClosed(t, c.c)
	}
}

// A wave of parks gives the dead goroutines' memory back once, after the
// parks have stopped coming; fewer parks than a wave, or a stopped parker,
// never do.
func TestParkWaveReleasesMemoryOnceItIsOver(t *testing.T) {
	releases := make(chan time.Time, 4)
	r := &memoryRelease{free: func() { releases <- time.Now() }}
	for range releaseWave - 1 {
		r.parked()
	}
	select {
	case <-releases:
		t.Fatal("released after fewer parks than a wave")
	case <-time.After(2 * parkAfter):
	}

	r.parked() // the wave is there
	// Parks keep coming for a while: no release until they stop.
	lastPark := time.Now()
	for range 3 {
		time.Sleep(parkAfter / 2)
		r.parked()
		lastPark = time.Now()
	}
	select {
	case at := <-releases:
		if at.Before(lastPark) {
			t.Fatalf("released %v before the wave's last park", lastPark.Sub(at))
		}
	case <-time.After(5 * parkAfter):
		t.Fatal("no release after the wave")
	}

	// The next wave waits for releaseEvery.
	for range releaseWave {
		r.parked()
	}
	select {
	case at := <-releases:
		t.Fatalf("a second release %v after a wave, sooner than releaseEvery (%v)", time.Since(at), releaseEvery)
	case <-time.After(2 * parkAfter):
	}
	r.stop()

	// A stop cancels a wave's release.
	stopped := &memoryRelease{free: func() { releases <- time.Now() }}
	for range releaseWave {
		stopped.parked()
	}
	stopped.stop()
	select {
	case <-releases:
		t.Fatal("released after stop")
	case <-time.After(2 * parkAfter):
	}
}
