package election

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

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
