package election

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// socketPair returns the two ends of a Unix stream socket pair: buffered
// like TCP (in the handshake both sides send first, which an unbuffered
// net.Pipe deadlocks), but without a port per connection.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		file := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(file)
		file.Close()
		if err != nil {
			t.Fatalf("socketpair conn: %v", err)
		}
	}
	return conns[0], conns[1]
}

// pipeLayer is a raft.StreamLayer whose one connection is an end of a
// socket pair, so a fuzzed peer can sit on the other end.
type pipeLayer struct{ conn net.Conn }

func (p pipeLayer) Accept() (net.Conn, error)                                { return p.conn, nil }
func (p pipeLayer) Dial(raft.ServerAddress, time.Duration) (net.Conn, error) { return p.conn, nil }
func (p pipeLayer) Close() error                                             { return p.conn.Close() }
func (p pipeLayer) Addr() net.Addr                                           { return p.conn.LocalAddr() }

// fuzzLayer is the Raft stream layer's authentication over inner, keyed
// with key (TLS 1.3 with the key pair derived from it): what
// FuzzRaftHandshake attacks. The test uses nothing but the raft.StreamLayer
// it returns.
func fuzzLayer(t testing.TB, inner raft.StreamLayer, key []byte, timeout time.Duration) raft.StreamLayer {
	return newTLSLayer(inner, testSecurity(t, key), timeout, zap.NewNop(), newMetricsForTest(t).handshakeFailures)
}

// Handshake deadlines of the fuzzed layer: short where the deadline is what
// ends the handshake (a keyless peer that stays silent), long everywhere
// else, where reaching it would be a scheduling accident.
const (
	fuzzShortDeadline = 20 * time.Millisecond
	fuzzLongDeadline  = 10 * time.Second
)

// FuzzRaftHandshake puts arbitrary bytes on the Raft stream layer from a
// peer without the key, on the dialling and on the accepting side, and the
// peer then hangs up or stays silent. They never authenticate: Dial fails
// and an accepted connection yields no byte to Raft. The handshake never
// panics and never outlives its deadline. As a control, a peer with the key
// (keyed) authenticates and its bytes arrive unchanged.
func FuzzRaftHandshake(f *testing.F) {
	f.Add(false, false, false, []byte{})
	f.Add(true, false, true, bytes.Repeat([]byte{0x16}, 32))
	f.Add(false, false, false, bytes.Repeat([]byte{0xff}, 65))
	// raft's own first byte (rpcAppendEntries) and a msgpack map, as a peer
	// with authentication off would send them.
	f.Add(false, false, true, []byte{0x00, 0x82, 0xa4, 0x54, 0x65, 0x72, 0x6d, 0x01})
	// The start of a TLS ClientHello record.
	f.Add(false, false, true, []byte{0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03})
	f.Add(true, true, false, []byte("raft bytes after the handshake"))
	f.Add(false, true, false, []byte{})
	key := []byte("0123456789abcdef")
	f.Fuzz(func(t *testing.T, dial, keyed, silent bool, peerBytes []byte) {
		timeout := fuzzLongDeadline
		if !keyed && silent {
			timeout = fuzzShortDeadline
		}
		ours, theirs := socketPair(t)
		defer theirs.Close()
		layer := fuzzLayer(t, pipeLayer{ours}, key, timeout)

		// The peer: with the key, the same layer on the other end, which
		// then sends peerBytes; without, peerBytes raw.
		peerDone := make(chan struct{})
		if keyed {
			go func() {
				defer close(peerDone)
				defer theirs.Close()
				peer := fuzzLayer(t, pipeLayer{theirs}, key, timeout)
				var conn net.Conn
				var err error
				if dial {
					conn, err = peer.Accept()
				} else {
					conn, err = peer.Dial("198.18.0.12:7000", timeout)
				}
				if err == nil {
					_, err = conn.Write(peerBytes) // an accepted side authenticates here
				}
				if err != nil {
					t.Errorf("peer with the key: %v", err)
				}
			}()
		} else {
			go func() { io.Copy(io.Discard, theirs) }() // whatever we send
			go func() {
				defer close(peerDone)
				theirs.Write(peerBytes)
				if !silent {
					theirs.Close()
				}
			}()
		}

		// Our side: Dial's result, or what an accepted connection's first
		// Read gives (it runs the handshake); then, after a handshake with
		// the keyed peer, all it sends.
		type result struct {
			err error
			got []byte
		}
		done := make(chan result, 1)
		go func() {
			var r result
			var conn net.Conn
			if dial {
				if conn, r.err = layer.Dial("198.18.0.12:7000", timeout); r.err == nil && keyed {
					r.got, r.err = io.ReadAll(conn)
				}
			} else if conn, r.err = layer.Accept(); r.err == nil {
				buf := make([]byte, 64)
				n, err := conn.Read(buf)
				r.got, r.err = buf[:n], err
				if keyed && err == nil {
					rest, err := io.ReadAll(conn)
					r.got, r.err = append(r.got, rest...), err
				}
			}
			if conn != nil {
				conn.Close()
			}
			done <- r
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(timeout + 10*time.Second):
			t.Fatalf("handshake, or a read after one, still running %s past its %s deadline", 10*time.Second, timeout)
		}
		theirs.Close()
		<-peerDone

		switch {
		case keyed && (r.err != nil && !errors.Is(r.err, io.EOF) || !bytes.Equal(r.got, peerBytes)):
			t.Fatalf("peer with the key sent %.100q; got %.100q, %v", peerBytes, r.got, r.err)
		case keyed:
		case r.err == nil:
			t.Fatalf("authenticated a peer without the key that sent %.100q (dial %t)", peerBytes, dial)
		case len(r.got) > 0:
			t.Fatalf("a peer without the key that sent %.100q reached raft with %q", peerBytes, r.got)
		}
	})
}
