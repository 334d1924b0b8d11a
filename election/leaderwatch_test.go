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

func noTurn(raft.ServerID, time.Time) time.Duration { return 0 }

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
			silent, wait := leaderSilence(tc.f, timeout, noTurn, now, now.Add(-tc.late))
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
		watchLeader(f, timeout, firstTurn(), nil, stop, func() { expired <- struct{}{} })
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

// firstTurn is a turnTaker for the first follower, which never waits.
func firstTurn() *turnTaker {
	return &turnTaker{
		order: func(raft.ServerID) (int, raft.ServerID) { return 0, "" },
		step:  time.Hour,
		asked: map[raft.ServerID]time.Time{},
	}
}

// A follower whose turn is later calls the same leader silent that much
// later than the timeout, and asks for its turn only once the timeout has
// passed, with the leader and the contact it saw.
func TestLeaderSilenceWaitsForTheTurn(t *testing.T) {
	const timeout, step = 60 * time.Millisecond, 5 * time.Millisecond
	now := time.Now()
	contact := now.Add(-20 * time.Millisecond)
	asked := 0
	turn := func(leader raft.ServerID, c time.Time) time.Duration {
		asked++
		if leader != "n1" || !c.Equal(contact) {
			t.Fatalf("turn asked for leader %q, contact %v; want n1, %v", leader, c, contact)
		}
		return step
	}
	f := &fakeFollower{state: raft.Follower, leader: "n1", contact: func() time.Time { return contact }}
	if silent, wait := leaderSilence(f, timeout, turn, now, now); silent || wait != 40*time.Millisecond || asked != 0 {
		t.Fatalf("fresh contact: %v, %v, turn asked %d times; want false, 40ms, 0", silent, wait, asked)
	}
	contact = now.Add(-timeout - 2*time.Millisecond)
	if silent, wait := leaderSilence(f, timeout, turn, now, now); silent || wait != 3*time.Millisecond {
		t.Fatalf("timeout passed, turn not: %v, %v; want false, 3ms", silent, wait)
	}
	contact = now.Add(-timeout - step)
	if silent, _ := leaderSilence(f, timeout, turn, now, now); !silent {
		t.Fatal("timeout and turn passed: not silent")
	}
}

func TestVoterTurn(t *testing.T) {
	servers := []raft.Server{
		{ID: "n3", Suffrage: raft.Voter}, {ID: "n1", Suffrage: raft.Voter},
		{ID: "n2", Suffrage: raft.Voter}, {ID: "w", Suffrage: raft.Nonvoter},
		{ID: "n4", Suffrage: raft.Voter},
	}
	for _, tc := range []struct {
		self, leader raft.ServerID
		rank         int
		before       raft.ServerID
	}{
		{"n1", "n2", 0, ""}, {"n3", "n2", 1, "n1"}, {"n4", "n2", 2, "n3"}, // the followers of n2 differ
		{"n2", "n1", 0, ""}, {"n3", "n1", 1, "n2"},
		{"n1", "n3", 0, ""}, {"n2", "n3", 1, "n1"}, {"n4", "n3", 2, "n2"},
		{"w", "n1", 0, ""}, // not a voter
	} {
		if rank, before := voterTurn(servers, tc.self, tc.leader); rank != tc.rank || before != tc.before {
			t.Errorf("voterTurn(%s, leader %s) = %d, %q; want %d, %q", tc.self, tc.leader, rank, before, tc.rank, tc.before)
		}
	}
}

// A follower's turn comes at once when the voter before it asked for a
// pre-vote after this follower last heard the leader, else a step per rank.
func TestTurnTakerFollowsThePredecessorsPreVote(t *testing.T) {
	const step = 15 * time.Millisecond
	contact := time.Now()
	tt := &turnTaker{
		order: func(leader raft.ServerID) (int, raft.ServerID) {
			if leader == "n1" {
				return 2, "n3"
			}
			return 0, ""
		},
		step:  step,
		asked: map[raft.ServerID]time.Time{},
	}
	for _, tc := range []struct {
		name   string
		leader raft.ServerID
		asked  map[raft.ServerID]time.Time
		want   time.Duration
	}{
		{"first: never waits", "n2", nil, 0},
		{"nobody asked", "n1", nil, 2 * step},
		{"another candidate asked", "n1", map[raft.ServerID]time.Time{"n4": contact.Add(time.Millisecond)}, 2 * step},
		{"the one before asked before the contact", "n1", map[raft.ServerID]time.Time{"n3": contact.Add(-time.Millisecond)}, 2 * step},
		{"the one before asked after the contact", "n1", map[raft.ServerID]time.Time{"n3": contact.Add(time.Millisecond)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt.asked = tc.asked
			if got := tt.turn(tc.leader, contact); got != tc.want {
				t.Fatalf("turn = %v, want %v", got, tc.want)
			}
		})
	}
}

// A pre-vote request from the voter before this follower, once the leader
// is timeout silent, ends the wait for its turn at once; without it the
// turn (an hour here) would hold the expiry back.
func TestWatchLeaderTakesItsTurnOnThePredecessorsPreVote(t *testing.T) {
	const timeout = 20 * time.Millisecond
	silentSince := time.Now()
	f := &fakeFollower{state: raft.Follower, leader: "n1", contact: func() time.Time { return silentSince }}
	tt := &turnTaker{
		order: func(raft.ServerID) (int, raft.ServerID) { return 1, "n2" },
		step:  time.Hour,
		asked: map[raft.ServerID]time.Time{},
	}
	preVotes := make(chan raft.Observation)
	expired := make(chan struct{}, 16)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		watchLeader(f, timeout, tt, preVotes, stop, func() { expired <- struct{}{} })
	}()
	defer func() {
		close(stop)
		<-done
	}()
	time.Sleep(3 * timeout) // the leader is silent; the watch waits for its turn
	if n := len(expired); n != 0 {
		t.Fatalf("%d expiries before the turn came", n)
	}
	for _, id := range []string{"n3", "n2"} { // another candidate first: still waits
		select {
		case preVotes <- raft.Observation{Data: raft.RequestPreVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte(id)}}}:
		case <-time.After(10 * time.Second):
			t.Fatal("the watch does not read pre-vote requests")
		}
		if id == "n3" {
			time.Sleep(timeout)
			if n := len(expired); n != 0 {
				t.Fatalf("%d expiries on another voter's pre-vote", n)
			}
		}
	}
	select {
	case <-expired:
	case <-time.After(10 * time.Second):
		t.Fatal("the predecessor's pre-vote did not end the wait for the turn")
	}
}
