package balancer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// FuzzAcceptProxyHeader feeds arbitrary bytes, then a half-close, to the
// PROXY header reader over a real socket. It must not panic, must end
// within its timeout, must yield a client only for a header go-proxyproto
// parses from the same bytes (that header's source, or the socket's for
// LOCAL), and must pass on every byte after the header exactly once.
func FuzzAcceptProxyHeader(f *testing.F) {
	src := &net.TCPAddr{IP: net.ParseIP("198.18.0.7"), Port: 4242}
	dst := &net.TCPAddr{IP: net.ParseIP("198.18.0.100"), Port: 80}
	for _, v := range []byte{1, 2} {
		h, _ := proxyproto.HeaderProxyFromAddrs(v, src, dst).Format()
		f.Add(append(h, "GET / HTTP/1.1\r\n\r\n"...))
	}
	f.Add([]byte("PROXY UNKNOWN\r\nrest"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))

	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	const timeout = 200 * time.Millisecond // short: an input that waits it out must end well inside the fuzzer's own deadline
	f.Fuzz(func(t *testing.T, data []byte) {
		client, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		go func() { // ends with the write, or when server closes
			_, _ = client.Write(data)
			_ = client.CloseWrite()
		}()

		start := time.Now()
		p, err := readProxyHeader(context.Background(), server, timeout)
		if took := time.Since(start); took > timeout+time.Second {
			t.Fatalf("header read took %s, timeout %s", took, timeout)
		}
		ref := bufio.NewReader(bytes.NewReader(data))
		want, refErr := proxyproto.Read(ref)
		if err != nil {
			if p.src != nil {
				t.Fatalf("error %v with a client %s", err, p.src)
			}
			return
		}
		if refErr != nil {
			t.Fatalf("accepted %q that go-proxyproto rejects on its own: %v", data, refErr)
		}
		wantSrc := want.SourceAddr
		if want.Command == proxyproto.LOCAL || want.TransportProtocol == proxyproto.UNSPEC {
			wantSrc = client.LocalAddr()
		}
		if p.src.String() != wantSrc.String() {
			t.Fatalf("client %s, header says %s", p.src, wantSrc)
		}
		rest, _ := io.ReadAll(ref)
		_ = server.SetReadDeadline(time.Now().Add(timeout))
		after, err := io.ReadAll(server)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after header: %v", err)
		}
		if got := append(p.early, after...); !bytes.Equal(got, rest) {
			t.Fatalf("after the header got %q, want %q", got, rest)
		}
	})
}
