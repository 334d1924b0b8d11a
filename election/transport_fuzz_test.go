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
// like TCP (the handshake has both sides send their nonce first, which an
// unbuffered net.Pipe deadlocks), but without a port per connection.
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

// Handshake deadlines of the fuzzed layer: short where the deadline is what
// ends the handshake (a silent peer that sent less than a nonce and a
// proof), long everywhere else, where reaching it would be a scheduling
// accident (a read past its deadline fails even with the data buffered).
const (
	fuzzShortDeadline = 20 * time.Millisecond
	fuzzLongDeadline  = 10 * time.Second
)

// FuzzRaftHandshake puts arbitrary bytes on the Raft stream layer from a
// peer without the key, on the dialling and on the accepting side. They
// never authenticate: Dial fails and an accepted connection yields no byte
// to Raft. The handshake never panics and never outlives its deadline,
// also when the peer stays silent; a peer that stays to hear the verdict
// is told errAuth. As a control, a peer with the key
// (keyed) authenticates and its bytes arrive unchanged.
func FuzzRaftHandshake(f *testing.F) {
	f.Add(false, false, false, []byte{})
	f.Add(true, false, true, make([]byte, nonceLen))
	f.Add(false, false, false, bytes.Repeat([]byte{0xff}, 2*nonceLen+1))
	// raft's own first byte (rpcAppendEntries) and a msgpack map, as a peer
	// with authentication off would send them.
	f.Add(false, false, true, []byte{0x00, 0x82, 0xa4, 0x54, 0x65, 0x72, 0x6d, 0x01})
	f.Add(true, true, false, []byte("raft bytes after the handshake"))
	f.Add(false, true, false, []byte{})
	key := []byte("0123456789abcdef")
	f.Fuzz(func(t *testing.T, dial, keyed, silent bool, peerBytes []byte) {
		timeout := fuzzLongDeadline
		if !keyed && silent && len(peerBytes) < 2*nonceLen {
			timeout = fuzzShortDeadline
		}
		ours, theirs := socketPair(t)
		defer theirs.Close()
		layer := newAuthLayer(pipeLayer{ours}, key, timeout, zap.NewNop())

		peerDone := make(chan struct{})
		if keyed {
			go func() {
				defer close(peerDone)
				defer theirs.Close()
				role := "dial"
				if dial {
					role = "accept"
				}
				peer := newAuthLayer(nil, key, timeout, zap.NewNop())
				if err := peer.handshake(theirs, role, timeout); err != nil {
					t.Errorf("peer with the key: %v", err)
					return
				}
				theirs.Write(peerBytes)
			}()
		} else {
			// What the handshake reads (a nonce and a proof) is in the
			// socket buffer before it starts, so the deadline never races
			// the peer's goroutine; the rest follows as it may.
			head := peerBytes[:min(len(peerBytes), 2*nonceLen)]
			if _, err := theirs.Write(head); err != nil {
				t.Fatal(err)
			}
			go func() { io.Copy(io.Discard, theirs) }() // whatever we send
			go func() {
				defer close(peerDone)
				theirs.Write(peerBytes[len(head):])
				if !silent {
					theirs.Close()
				}
			}()
		}

		// Our side: the handshake result, then for the keyed peer what
		// arrives after it, for a keyless one what a Read still yields.
		type result struct {
			err  error
			got  []byte
			read error
		}
		done := make(chan result, 1)
		go func() {
			var r result
			var conn net.Conn
			if dial {
				conn, r.err = layer.Dial("peer", timeout)
			} else if conn, r.err = layer.Accept(); r.err == nil {
				r.err = conn.(*authConn).auth() // what its first Read runs
			}
			switch {
			case keyed && r.err == nil:
				r.got, r.read = io.ReadAll(conn)
				conn.Close()
			case !dial && conn != nil:
				buf := make([]byte, 64)
				n, err := conn.Read(buf)
				r.got, r.read = buf[:n], err
			}
			done <- r
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(timeout + 10*time.Second):
			t.Fatalf("handshake still running %s after its %s deadline", 10*time.Second, timeout)
		}
		theirs.Close()
		<-peerDone

		switch {
		case keyed && (r.err != nil || r.read != nil || !bytes.Equal(r.got, peerBytes)):
			t.Fatalf("peer with the key: handshake %v, read %q, %v; want %q", r.err, r.got, r.read, peerBytes)
		case keyed:
		case r.err == nil:
			t.Fatalf("authenticated a peer without the key that sent %.100q (dial %t)", peerBytes, dial)
		case !dial && (len(r.got) > 0 || r.read == nil):
			t.Fatalf("a peer without the key that sent %.100q reached raft with %q (read error %v)", peerBytes, r.got, r.read)
		case silent && len(peerBytes) >= 2*nonceLen && !errors.Is(r.err, errAuth):
			t.Fatalf("a full handshake with a wrong proof ended in %v, want %v", r.err, errAuth)
		}
	})
}
