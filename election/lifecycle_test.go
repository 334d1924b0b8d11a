package election

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

// leftovers remembers what ran before a test made a node, and the registry
// the node is given, to find what the node left behind.
type leftovers struct {
	before goleak.Option
	reg    *prometheus.Registry
}

func watchLeftovers() leftovers {
	return leftovers{before: goleak.IgnoreCurrent(), reg: prometheus.NewRegistry()}
}

// none fails if a goroutine started since watchLeftovers still runs or a
// series is registered.
func (l leftovers) none(t *testing.T, after string) {
	t.Helper()
	if err := goleak.Find(l.before); err != nil {
		t.Errorf("%s, goroutines are left: %v", after, err)
	}
	mfs, err := l.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		t.Errorf("%s, %s is still registered", after, mf.GetName())
	}
}

// eventsClosed waits for ch to be closed, reading what is left in it.
func eventsClosed(t *testing.T, ch <-chan Event, after string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, open := <-ch:
			if !open {
				return
			}
		case <-deadline:
			t.Fatalf("%s, Events is still open", after)
		}
	}
}

// TestNewOpensNothing: New only validates. A node made and never started
// (the daemon failed on a later component) runs no goroutine and holds no
// metric, and Shutdown still closes Events.
func TestNewOpensNothing(t *testing.T) {
	left := watchLeftovers()
	o := testOptions(t)
	o.Registerer = left.reg
	n, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	left.none(t, "after New")
	if err := n.Shutdown(); err != nil {
		t.Fatalf("shutdown of a node never started: %v", err)
	}
	eventsClosed(t, n.Events(), "after Shutdown")
	if err := n.Start(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("start after shutdown: %v", err)
	}
}

// TestFailedStartLeavesNothingBehind makes Start fail at its last step (the
// gossip port is taken), after the Raft store, transport and raft itself are
// up: everything is undone, Events is closed, and a second node with the same
// options and registry starts.
func TestFailedStartLeavesNothingBehind(t *testing.T) {
	left := watchLeftovers()
	o := testOptions(t)
	o.Registerer = left.reg
	taken, err := net.Listen("tcp", o.GossipBind)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "start gossip") {
		_ = taken.Close()
		t.Fatalf("start with the gossip port taken: %v, want a gossip error", err)
	}
	eventsClosed(t, n.Events(), "after a failed Start")
	left.none(t, "after a failed Start")
	if err := n.Shutdown(); err != nil {
		t.Errorf("shutdown after a failed start: %v", err)
	}
	if err := n.Start(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Errorf("second start of a failed node: %v", err)
	}
	if err := taken.Close(); err != nil {
		t.Fatal(err)
	}

	again, err := New(o)
	if err != nil {
		t.Fatalf("new on the registry of the failed node: %v", err)
	}
	if err := again.Start(context.Background()); err != nil {
		t.Fatalf("start on the data dir and ports of the failed node: %v", err)
	}
	t.Cleanup(func() {
		if err := again.Shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	eventually(t, 15*time.Second, func() error {
		if s := again.Status(); s.State != "leader" {
			return fmtErr("state %s", s.State)
		}
		return nil
	})
}
