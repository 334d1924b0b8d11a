package election

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vipd/vipd/lease"
)

// TestLeaseConnectionsShareTheRaftPort serves the lease protocol on a keyed
// node's Raft port: a member dials it and exchanges a message, Raft
// replicates through the same port meanwhile, and a node with another key
// never reaches the lease server.
func TestLeaseConnectionsShareTheRaftPort(t *testing.T) {
	c, leader := formedClusterWith(t, withKeys(keyA))
	server := c.follower(leader)
	var served atomic.Int32
	server.ServeLeases(func(conn net.Conn) {
		served.Add(1)
		m, err := lease.ReadMessage(conn)
		if err != nil {
			t.Errorf("server read: %v", err)
			return
		}
		if err := lease.WriteMessage(conn, lease.Message{Kind: lease.KindAnswer, ID: m.ID, VIPs: m.VIPs}); err != nil {
			t.Errorf("server write: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := leader.DialLease(ctx, server.opts.RaftBind)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	want := lease.Message{Kind: lease.KindRequest, ID: 9, Node: leader.opts.NodeName, VIPs: []string{"198.18.0.100"}}
	if err := lease.WriteMessage(conn, want); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := lease.ReadMessage(conn)
	if err != nil || got.Kind != lease.KindAnswer || got.ID != 9 || len(got.VIPs) != 1 {
		t.Fatalf("answer %+v, %v", got, err)
	}
	if err := leader.SetDrained("web", "198.18.0.21:80", true); err != nil {
		t.Fatalf("raft beside the lease connection: %v", err)
	}

	stranger := c.add(func(o *Options) { o.SecretKeys = [][]byte{keyX} })
	if conn, err := stranger.DialLease(ctx, server.opts.RaftBind); err == nil {
		conn.Close()
		t.Fatal("a node with another key dialled the lease server")
	}
	if n := served.Load(); n != 1 {
		t.Fatalf("lease server served %d connections, want the member's 1", n)
	}
}

// blockedStream is a raft.StreamLayer whose Dial waits for release, as a
// dial to a dead host waits for its timeout, then returns conn.
type blockedStream struct {
	net.Listener
	release chan struct{}
	conn    *dialedConn
}

func (b *blockedStream) Dial(raft.ServerAddress, time.Duration) (net.Conn, error) {
	<-b.release
	return b.conn, nil
}

type dialedConn struct {
	net.Conn
	closed chan struct{}
}

func (c *dialedConn) Close() error { close(c.closed); return nil }

// A lease dial returns when its context ends, though the stream layer's
// dial takes only a timeout (a holder that changed leaders must not sit on
// a dial to the dead one), and the connection that dial returns later is
// closed, not leaked.
func TestLeaseDialEndsWithItsContext(t *testing.T) {
	s := &blockedStream{release: make(chan struct{}), conn: &dialedConn{closed: make(chan struct{})}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := dialContext(ctx, s, "127.0.0.1:1", time.Hour)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("dial after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dial did not return when its context ended")
	}
	close(s.release)
	select {
	case <-s.conn.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection the late dial returned was not closed")
	}
}
