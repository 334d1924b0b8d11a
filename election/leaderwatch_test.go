package election

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fakeFollower is a followerView whose answers the test sets; it counts the
// watch's looks so a test can wait for them instead of for time.
type fakeFollower struct {
	mu      sync.Mutex
	state   raft.RaftState
	leader  raft.ServerAddress
	contact func() time.Time // LastContact's answer
	looked  chan struct{}    // a value per LastContact call, if set
}

func (f *fakeFollower) State() raft.RaftState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *fakeFollower) LeaderWithID() (raft.ServerAddress, raft.ServerID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, raft.ServerID(f.leader)
}

func (f *fakeFollower) LastContact() time.Time {
	f.mu.Lock()
	c := f.contact
	f.mu.Unlock()
	if f.looked != nil {
		f.looked <- struct{}{}
	}
	return c()
}

func noStagger(raft.ServerID) time.Duration { return 0 }

func TestLeaderSilence(t *testing.T) {
	const timeout = 60 * time.Millisecond
	now := time.Now()
	at := func(d time.Duration) func() time.Time { return func() time.Time { return now.Add(-d) } }
	for _, tc := range []struct {
		name       string
		f          *fakeFollower
		late       time.Duration // how long after it was due the look came
		wantSilent bool
		wantWait   time.Duration
	}{
		{"fresh contact: wake when it turns timeout old", &fakeFollower{state: raft.Follower, leader: "n1", contact: at(20 * time.Millisecond)}, 0, false, 40 * time.Millisecond},
		{"contact exactly timeout old", &fakeFollower{state: raft.Follower, leader: "n1", contact: at(timeout)}, 0, true, timeout},
		{"contact older than timeout", &fakeFollower{state: raft.Follower, leader: "n1", contact: at(time.Second)}, 0, true, timeout},
		{"silent, looked a little late", &fakeFollower{state: raft.Follower, leader: "n1", contact: at(timeout + 5*time.Millisecond)}, timeout / 10, true, timeout},
		{"silent, but this process did not run: look again after a heartbeat interval", &fakeFollower{state: raft.Follower, leader: "n1", contact: at(time.Second)}, timeout/10 + time.Millisecond, false, timeout / 5},
		{"fresh contact after a stall", &fakeFollower{state: raft.Follower, leader: "n1", contact: at(time.Millisecond)}, time.Second, false, timeout - time.Millisecond},
		{"no known leader (raft gave up on it)", &fakeFollower{state: raft.Follower, contact: at(time.Second)}, 0, false, timeout},
		{"candidate", &fakeFollower{state: raft.Candidate, leader: "n1", contact: at(time.Second)}, 0, false, timeout},
		{"leader", &fakeFollower{state: raft.Leader, leader: "n0", contact: at(time.Second)}, 0, false, timeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			silent, wait := leaderSilence(tc.f, timeout, noStagger, now, now.Add(-tc.late))
			if silent != tc.wantSilent || wait != tc.wantWait {
				t.Fatalf("leaderSilence = %v, %v; want %v, %v", silent, wait, tc.wantSilent, tc.wantWait)
			}
		})
	}
}

// TestWatchLeaderExpiresOnlyASilentLeader runs the watch against a leader
// that keeps in touch, then one that went silent: raft is poked only for
// the silent one, and the watch ends on stop.
func TestWatchLeaderExpiresOnlyASilentLeader(t *testing.T) {
	const timeout = 50 * time.Millisecond // wakes within timeout/10 of due count as on time
	f := &fakeFollower{state: raft.Follower, leader: "n1", contact: time.Now, looked: make(chan struct{})}
	expired := make(chan struct{}, 16)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		watchLeader(f, timeout, noStagger, stop, func() { expired <- struct{}{} })
	}()
	look := func() {
		t.Helper()
		select {
		case <-f.looked:
		case <-time.After(10 * time.Second):
			t.Fatal("the watch stopped looking at raft")
		}
	}
	for range 20 { // contact is always fresh
		look()
	}
	if n := len(expired); n != 0 {
		t.Fatalf("%d expiries while the leader kept in touch", n)
	}
	silentSince := time.Now()
	f.mu.Lock()
	f.contact = func() time.Time { return silentSince.Add(-time.Hour) }
	f.mu.Unlock()
	look()
	select {
	case <-expired:
	case <-time.After(10 * time.Second):
		t.Fatal("a silent leader was never expired")
	}
	close(stop)
	go func() { // the watch may be sending a look
		for range f.looked {
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end on stop")
	}
	close(f.looked)
}

// A follower with a later rank calls the same leader silent a step later
// than the timeout, and asks for its rank only once the timeout has passed.
func TestLeaderSilenceWaitsOutTheRanksStep(t *testing.T) {
	const timeout, step = 60 * time.Millisecond, 5 * time.Millisecond
	now := time.Now()
	asked := 0
	stagger := func(leader raft.ServerID) time.Duration {
		asked++
		if leader != "n1" {
			t.Fatalf("stagger asked for leader %q, want n1", leader)
		}
		return step
	}
	f := &fakeFollower{state: raft.Follower, leader: "n1", contact: func() time.Time { return now.Add(-20 * time.Millisecond) }}
	if silent, wait := leaderSilence(f, timeout, stagger, now, now); silent || wait != 40*time.Millisecond || asked != 0 {
		t.Fatalf("fresh contact: %v, %v, stagger asked %d times; want false, 40ms, 0", silent, wait, asked)
	}
	f.contact = func() time.Time { return now.Add(-timeout - 2*time.Millisecond) }
	if silent, wait := leaderSilence(f, timeout, stagger, now, now); silent || wait != 3*time.Millisecond {
		t.Fatalf("timeout passed, step not: %v, %v; want false, 3ms", silent, wait)
	}
	f.contact = func() time.Time { return now.Add(-timeout - step) }
	if silent, _ := leaderSilence(f, timeout, stagger, now, now); !silent {
		t.Fatal("timeout and step passed: not silent")
	}
}

func TestVoterRank(t *testing.T) {
	servers := []raft.Server{
		{ID: "n3", Suffrage: raft.Voter}, {ID: "n1", Suffrage: raft.Voter},
		{ID: "n2", Suffrage: raft.Voter}, {ID: "w", Suffrage: raft.Nonvoter},
	}
	for _, tc := range []struct {
		self, leader raft.ServerID
		want         int
	}{
		{"n1", "n2", 0}, {"n3", "n2", 1}, // the two followers of n2 differ
		{"n2", "n1", 0}, {"n3", "n1", 1},
		{"n1", "n3", 0}, {"n2", "n3", 1},
		{"w", "n1", 0}, // not a voter
	} {
		if got := voterRank(servers, tc.self, tc.leader); got != tc.want {
			t.Errorf("voterRank(%s, leader %s) = %d, want %d", tc.self, tc.leader, got, tc.want)
		}
	}
}
