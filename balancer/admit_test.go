package balancer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// dialFrom connects to addr from the loopback address src (127.0.0.0/8 is
// all on lo), so one test has several client sources.
func dialFrom(t testing.TB, src, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(ioWait))
	return c.(*net.TCPConn)
}

// greetFrom dials from src and reads the backend's greeting line.
func greetFrom(t testing.TB, src, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c := dialFrom(t, src, addr)
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatalf("greeting from %s: %v", src, err)
	}
	return c, r
}

// expectResetFrom dials addr from src and checks the proxy resets the
// connection. On loopback the RST can beat the handshake's end, so the dial
// itself may fail with the reset.
func expectResetFrom(t testing.TB, src, addr string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(ioWait))
	expectReset(t, c)
}

// expectReset checks the proxy reset c (RST, not FIN).
func expectReset(t testing.TB, c net.Conn) {
	t.Helper()
	_, err := c.Read(make([]byte, 64))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after refusal: %v, want a connection reset", err)
	}
}

func refusedCount(t testing.TB, b *Balancer, reason string) uint64 {
	t.Helper()
	for r, name := range refusalNames {
		if name == reason {
			return b.layout.Load().frontends[0].refused[r].Load()
		}
	}
	t.Fatalf("no refusal %q", reason)
	return 0
}

func TestPerSourceLimitResetsExcessOfOneSourceOnly(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	b, reg := startBalancer(t, poolOf("round_robin", be), FrontendConfig{MaxConnectionsPerSource: 2}, nil)
	fe := b.Addr("fe").String()
	c1, r1 := greetFrom(t, "127.0.0.1", fe)
	c2, _ := greetFrom(t, "127.0.0.1", fe)
	expectResetFrom(t, "127.0.0.1", fe)
	refused := map[string]string{"frontend": "fe", "reason": "per_source"}
	if n := metricValue(t, reg, "vipd_frontend_refused_connections_total", refused); n != 1 {
		t.Fatalf("refused per_source %v, want 1", n)
	}
	other, ro := greetFrom(t, "127.0.0.2", fe) // another source is not affected
	echo(t, other, ro, "other source")
	echo(t, c1, r1, "first still open")

	f := b.layout.Load().frontends[0]
	_ = c1.Close()
	_ = c2.Close()
	_ = other.Close()
	waitFor(t, func() bool { return f.active.Load() == 0 })
	if n := f.perSource.sources(); n != 0 {
		t.Fatalf("%d sources still counted after every connection closed", n)
	}
	c3, r3 := greetFrom(t, "127.0.0.1", fe)
	echo(t, c3, r3, "after closes")
}

// The limit of a frontend a reload keeps changes for new connections, and
// the counts of connections already open carry over.
func TestPerSourceLimitChangesInPlace(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	fc := FrontendConfig{Name: "fe", Listen: "127.0.0.1:0", Pool: "p", MaxConnectionsPerSource: 2}
	pools := []PoolConfig{poolOf("round_robin", be)}
	b, _ := startWith(t, Options{Frontends: []FrontendConfig{fc}, Pools: pools})
	fe := b.Addr("fe").String()
	greetFrom(t, "127.0.0.1", fe)
	greetFrom(t, "127.0.0.1", fe)

	fc.MaxConnectionsPerSource = 3
	reconfigure(t, b, Options{Frontends: []FrontendConfig{fc}, Pools: pools}, time.Minute)
	greetFrom(t, "127.0.0.1", fe) // the third fits the new limit
	expectResetFrom(t, "127.0.0.1", fe)

	fc.MaxConnectionsPerSource = 1
	reconfigure(t, b, Options{Frontends: []FrontendConfig{fc}, Pools: pools}, time.Minute)
	expectResetFrom(t, "127.0.0.1", fe)
	if n := refusedCount(t, b, "per_source"); n != 2 {
		t.Fatalf("refused per_source %d, want 2", n)
	}
}

// proxyBackend reads the PROXY header vipd sends, then the client's data
// up to its half-close, and answers with the header's addresses and the
// data's length and digest.
func proxyBackend(t *testing.T) string {
	return startBackend(t, func(c *net.TCPConn) {
		r := bufio.NewReader(c)
		h, err := proxyproto.Read(r)
		if err != nil {
			_, _ = fmt.Fprintf(c, "no header: %v", err)
			return
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return
		}
		sum := sha256.Sum256(data)
		_, _ = fmt.Fprintf(c, "%s %s %d %s", h.SourceAddr, h.DestinationAddr, len(data), hex.EncodeToString(sum[:4]))
	})
}

func acceptProxyFrontend(from string, timeout time.Duration) FrontendConfig {
	return FrontendConfig{AcceptProxy: &AcceptProxyConfig{From: []netip.Prefix{netip.MustParsePrefix(from)}, Timeout: timeout}}
}

// sendAll writes header and data in one write, half-closes and returns the
// whole reply.
func sendAll(t *testing.T, c *net.TCPConn, header *proxyproto.Header, data []byte) string {
	t.Helper()
	raw, err := header.Format()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(append(raw, data...)); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reply: %v", err)
	}
	return string(reply)
}

func TestAcceptProxyPassesHeaderSourceToBackend(t *testing.T) {
	// 64 KiB: more than the header reader's read-ahead, so part of it is
	// forwarded from that buffer and the rest spliced.
	payloads := map[string][]byte{"small": []byte("hello\n"), "large": bytes.Repeat([]byte("0123456789abcdef"), 4096)}
	for _, version := range []byte{1, 2} {
		for name, data := range payloads {
			t.Run(fmt.Sprintf("v%d/%s", version, name), func(t *testing.T) {
				pc := poolOf("round_robin", proxyBackend(t))
				pc.ProxyProtocol = "v2"
				b, _ := startBalancer(t, pc, acceptProxyFrontend("127.0.0.0/8", ioWait), nil)
				src := &net.TCPAddr{IP: net.ParseIP("198.18.0.7"), Port: 4242}
				dst := &net.TCPAddr{IP: net.ParseIP("198.18.0.100"), Port: 80}
				got := sendAll(t, dial(t, b), proxyproto.HeaderProxyFromAddrs(version, src, dst), data)
				sum := sha256.Sum256(data)
				if want := fmt.Sprintf("%s %s %d %s", src, dst, len(data), hex.EncodeToString(sum[:4])); got != want {
					t.Fatalf("backend saw %q, want %q", got, want)
				}
			})
		}
	}
}

// The per-source limit counts the PROXY header's source, not the sender's.
func TestAcceptProxyPerSourceLimitCountsHeaderSource(t *testing.T) {
	fc := acceptProxyFrontend("127.0.0.0/8", ioWait)
	fc.MaxConnectionsPerSource = 1
	b, _ := startBalancer(t, poolOf("round_robin", startBackend(t, namedEcho("a"))), fc, nil)
	behind := func(ip string) (*net.TCPConn, *bufio.Reader) {
		c := dial(t, b)
		h := proxyproto.HeaderProxyFromAddrs(1, &net.TCPAddr{IP: net.ParseIP(ip), Port: 1000}, b.Addr("fe"))
		if _, err := h.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	c1, r1 := behind("198.18.0.7")
	readLine(t, r1)
	echo(t, c1, r1, "x")
	c2, _ := behind("198.18.0.7")
	expectReset(t, c2)
	c3, r3 := behind("198.18.0.8")
	if line := readLine(t, r3); string(line) != "a\n" {
		t.Fatalf("second header source got %q", line)
	}
	_ = c3
	if n := refusedCount(t, b, "per_source"); n != 1 {
		t.Fatalf("refused per_source %d, want 1", n)
	}
}

func readLine(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	line, err := r.ReadBytes('\n')
	if err != nil {
		t.Fatalf("read line: %v", err)
	}
	return line
}

func TestAcceptProxyRefusesUntrustedSource(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	b, _ := startBalancer(t, poolOf("round_robin", be), acceptProxyFrontend("198.18.0.0/24", ioWait), nil)
	expectResetFrom(t, "127.0.0.1", b.Addr("fe").String()) // refused before it could send a header
	if n := refusedCount(t, b, "proxy_untrusted"); n != 1 {
		t.Fatalf("refused proxy_untrusted %d, want 1", n)
	}
}

func TestAcceptProxyRefusesMissingBadOrSlowHeader(t *testing.T) {
	for _, tc := range []struct {
		name, send, reason string
	}{
		{"no header", "GET / HTTP/1.0\r\n\r\n", "proxy_bad_header"},
		{"garbage v1", "PROXY TCP4 not an address\r\n", "proxy_bad_header"},
		{"bad v2 command", string(proxyproto.SIGV2) + "\x2f\x11\x00\x0c", "proxy_bad_header"},
		{"v1 in two reads", "PROXY TCP4 198.18.0.7", "proxy_bad_header"}, // go-proxyproto wants v1 in one read
		{"half a v2 header", string(proxyproto.SIGV2) + "\x21\x11", "proxy_timeout"},
		{"nothing", "", "proxy_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached := make(chan struct{}, 1)
			be := startBackend(t, func(*net.TCPConn) { reached <- struct{}{} })
			b, _ := startBalancer(t, poolOf("round_robin", be), acceptProxyFrontend("127.0.0.0/8", 200*time.Millisecond), nil)
			c := dial(t, b)
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			expectReset(t, c)
			if n := refusedCount(t, b, tc.reason); n != 1 {
				t.Fatalf("refused %s %d, want 1", tc.reason, n)
			}
			f := b.layout.Load().frontends[0]
			waitFor(t, func() bool { return f.active.Load() == 0 })
			select {
			case <-reached:
				t.Fatal("a refused connection reached the backend")
			default:
			}
		})
	}
}

// A LOCAL header (a health check of the load balancer in front) passes with
// the sender's own addresses.
func TestAcceptProxyLocalHeaderUsesSocketAddresses(t *testing.T) {
	pc := poolOf("round_robin", proxyBackend(t))
	pc.ProxyProtocol = "v1"
	b, _ := startBalancer(t, pc, acceptProxyFrontend("127.0.0.0/8", ioWait), nil)
	c := dial(t, b)
	got := sendAll(t, c, &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}, []byte("hc"))
	if want := fmt.Sprintf("%s %s 2 ", c.LocalAddr(), b.Addr("fe")); len(got) < len(want) || got[:len(want)] != want {
		t.Fatalf("backend saw %q, want the socket's addresses %q…", got, want)
	}
}

// The header timeout covers the header only: a client that sends its data
// well after it is relayed.
func TestAcceptProxyTimeoutEndsWithTheHeader(t *testing.T) {
	pc := poolOf("round_robin", proxyBackend(t))
	pc.ProxyProtocol = "v2"
	const timeout = 100 * time.Millisecond
	b, _ := startBalancer(t, pc, acceptProxyFrontend("127.0.0.0/8", timeout), nil)
	c := dial(t, b)
	src := &net.TCPAddr{IP: net.ParseIP("198.18.0.7"), Port: 4242}
	if _, err := proxyproto.HeaderProxyFromAddrs(2, src, b.Addr("fe")).WriteTo(c); err != nil {
		t.Fatal(err)
	}
	f := b.layout.Load().frontends[0]
	waitFor(t, func() bool { return b.live.count() == 1 }) // the header was read: the pair relays
	time.Sleep(3 * timeout)                                // past the header's deadline
	got := sendAll(t, c, &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}, nil)
	if want := fmt.Sprintf("%s %s %d ", src, b.Addr("fe"), 16); len(got) < len(want) || got[:len(want)] != want {
		t.Fatalf("backend saw %q, want the late data relayed after %q", got, want)
	}
	if n := f.refused[refusedProxyTimeout].Load(); n != 0 {
		t.Fatalf("%d timeouts counted for a header that arrived in time", n)
	}
}

// Shutdown past its grace ends a header read at once rather than at the
// header timeout.
func TestShutdownEndsPendingHeaderRead(t *testing.T) {
	be := startBackend(t, namedEcho("a"))
	b, _ := startBalancer(t, poolOf("round_robin", be), acceptProxyFrontend("127.0.0.0/8", time.Hour), nil)
	c := dial(t, b)
	f := b.layout.Load().frontends[0]
	waitFor(t, func() bool { return f.active.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace
	done := make(chan error, 1)
	go func() { done <- b.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(ioWait):
		t.Fatal("Shutdown waits for a header that never comes")
	}
	expectClosed(t, c)
}

// source_hash picks by the PROXY header's source: one source always lands
// on one backend, and sources spread over both, although every connection
// comes from the same sender.
func TestAcceptProxySourceHashUsesHeaderSource(t *testing.T) {
	pc := poolOf("source_hash", startBackend(t, namedEcho("a")), startBackend(t, namedEcho("b")))
	b, _ := startBalancer(t, pc, acceptProxyFrontend("127.0.0.0/8", ioWait), nil)
	pick := func(ip string) string {
		c := dial(t, b)
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP(ip), Port: 1000}, b.Addr("fe"))
		if _, err := h.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		name := string(readLine(t, bufio.NewReader(c)))
		_ = c.Close()
		return name
	}
	seen := map[string]bool{}
	for i := 1; i <= 20; i++ {
		ip := fmt.Sprintf("198.18.0.%d", i)
		first := pick(ip)
		if again := pick(ip); again != first {
			t.Fatalf("source %s went to %q, then %q", ip, first, again)
		}
		seen[first] = true
	}
	if len(seen) != 2 {
		t.Fatalf("20 header sources reached only %v: the pick ignores the header", seen)
	}
}
