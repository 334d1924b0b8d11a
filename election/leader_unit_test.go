package election

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A node that wins because its leader died must not hand leadership straight
// back to that leader: gossip may still call it alive for seconds.
func TestHandoffTriesTheReplacedLeaderLast(t *testing.T) {
	n := &Node{prevLeader: "n1"}
	h := n.newHandoff()
	if !h.avoid("n1") {
		t.Error("the replaced leader n1 is not avoided")
	}
	if h.avoid("n2") {
		t.Error("n2, never tried, is avoided")
	}
	if fresh := (&Node{}).newHandoff(); fresh.avoid("n1") {
		t.Error("with no previous leader, n1 is avoided")
	}
}

// pendingFuture is a raft.Future that raft has taken and not yet answered.
type pendingFuture struct{ answer chan error }

func (f pendingFuture) Error() error { return <-f.answer }

// A leader loop waiting on raft must come back when its window ends or its
// time is up, whatever raft does with the request: before await, a pending
// AddVoter held a leader loop for minutes, with no hand-off possible.
func TestAwaitEndsWithTheWindowOrTheTimeoutWhileRaftIsSilent(t *testing.T) {
	returns := func(name string, call func() error) error {
		t.Helper()
		got := make(chan error, 1)
		go func() { got <- call() }()
		select {
		case err := <-got:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: await still waiting after 10s", name)
			return nil
		}
	}

	stop := make(chan struct{})
	close(stop)
	f := pendingFuture{make(chan error)}
	defer close(f.answer) // raft answers at last (at shutdown), and await's waiters end
	if err := returns("stopped window", func() error { return await(f, stop, time.Hour) }); !errors.Is(err, errWindowEnded) {
		t.Errorf("window ended: got %v, want errWindowEnded", err)
	}

	err := returns("timeout", func() error { return await(f, make(chan struct{}), 10*time.Millisecond) })
	if err == nil || errors.Is(err, errWindowEnded) || !strings.Contains(err.Error(), "no answer within 10ms") {
		t.Errorf("timeout: got %v, want the timeout named", err)
	}

	answered := pendingFuture{make(chan error, 1)}
	answered.answer <- raft.ErrLeadershipLost
	if err := returns("answer", func() error { return await(answered, make(chan struct{}), time.Hour) }); !errors.Is(err, raft.ErrLeadershipLost) {
		t.Errorf("raft answered: got %v, want raft's answer", err)
	}
}
