package election

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestBootstrapExpectElectsExactlyOneLeader(t *testing.T) {
	c, leader := formedCluster(t)
	var formed []string
	for _, tn := range c.nodes {
		if tn.formed.Load() {
			formed = append(formed, tn.opts.NodeName)
		}
	}
	if len(formed) != 1 || formed[0] != "n0" {
		t.Fatalf("bootstrapped by %v, want by the lowest-named node alone (n0)", formed)
	}
	st := leader.Status()
	if st.State != "leader" || st.Leader != leader.opts.NodeName || st.Term == 0 {
		t.Fatalf("leader status %+v", st)
	}
	for _, tn := range c.nodes {
		if tn == leader {
			continue
		}
		eventually(t, 5*time.Second, func() error {
			s := tn.Status()
			if s.State != "follower" || s.Leader != leader.opts.NodeName {
				return fmtErr("%s: state %s leader %q", tn.opts.NodeName, s.State, s.Leader)
			}
			return nil
		})
	}
	time.Sleep(500 * time.Millisecond)
	if ls := c.leaders(); len(ls) != 1 {
		t.Fatalf("%d leaders after settling", len(ls))
	}
	for _, tn := range c.nodes {
		want := 0.0
		if tn == leader {
			want = 1
		}
		if got := tn.metric(t, "vipd_election_is_leader"); got != want {
			t.Errorf("%s is_leader %v, want %v", tn.opts.NodeName, got, want)
		}
		if got := tn.metric(t, "vipd_election_term"); got != float64(st.Term) {
			t.Errorf("%s term %v, want %d", tn.opts.NodeName, got, st.Term)
		}
		if got := tn.metric(t, "vipd_election_members_alive"); got != 3 {
			t.Errorf("%s members_alive %v", tn.opts.NodeName, got)
		}
		if got := tn.metric(t, "vipd_election_last_contact_seconds"); tn != leader && got > 1 {
			t.Errorf("follower %s last contact %vs ago", tn.opts.NodeName, got)
		}
	}
	if got := leader.metric(t, "vipd_election_leadership_changes_total"); got != 1 {
		t.Errorf("leader reports %v leadership changes, want 1", got)
	}
	c.checkNoOverlap()
}

// TestCrashedNodeStaysVoterUntilRemoved stops a follower without leaving: it
// stays a voter; Remove takes it out; after a restart it is added again.
func TestCrashedNodeStaysVoterUntilRemoved(t *testing.T) {
	c, leader := formedCluster(t)
	var crashed, other *tnode
	for _, tn := range c.nodes {
		switch {
		case tn == leader:
		case crashed == nil:
			crashed = tn
		default:
			other = tn
		}
	}
	c.stop(crashed)
	// Gossip declares it dead (NotifyLeave, as for a departure) ...
	eventually(t, 20*time.Second, func() error {
		for _, m := range leader.Status().Members {
			if m.Name == crashed.opts.NodeName && m.Alive {
				return fmtErr("%s still alive in gossip", m.Name)
			}
		}
		return nil
	})
	// ... and the leader leaves it a voter.
	time.Sleep(time.Second)
	c.waitVoters(time.Second, "n0", "n1", "n2")

	if err := other.Remove(crashed.opts.NodeName); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("remove on a follower: %v", err)
	}
	if err := leader.Remove(leader.opts.NodeName); err == nil {
		t.Fatal("the leader removed itself")
	}
	if err := leader.Remove(crashed.opts.NodeName); err != nil {
		t.Fatalf("remove: %v", err)
	}
	var rest []string
	for _, tn := range c.nodes {
		if tn != crashed {
			rest = append(rest, tn.opts.NodeName)
		}
	}
	c.waitVoters(5*time.Second, rest...)
	if err := leader.Remove(crashed.opts.NodeName); err == nil {
		t.Fatal("removing a non-member succeeded")
	}

	c.start(crashed)
	c.waitVoters(15*time.Second, "n0", "n1", "n2")
}

// TestLeaderShutdownElectsNewLeader kills the leader (Shutdown, no leave)
// several times and measures until another node announces leadership; the
// dead node restarts from its DataDir between trials. It runs with Raft in
// plain TCP and over TLS (a cluster key), to compare the two.
func TestLeaderShutdownElectsNewLeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(int, *Options)
	}{{"plain", nil}, {"tls", withKeys(keyA)}} {
		t.Run(tc.name, func(t *testing.T) { leaderShutdownTrials(t, tc.mod) })
	}
}

func leaderShutdownTrials(t *testing.T, mod func(int, *Options)) {
	c := newCluster(t, 3, 3, lanTiming, mod)
	leader := c.waitLeader(15 * time.Second)
	c.waitVoters(5*time.Second, "n0", "n1", "n2")
	const trials = 7
	var took []time.Duration
	for i := range trials {
		time.Sleep(300 * time.Millisecond) // let followers settle on the leader
		start := time.Now()
		c.stop(leader)
		next := c.waitLeader(10*time.Second, leader)
		d := next.rec.gainedAt().Sub(start)
		took = append(took, d)
		t.Logf("trial %d: %s down, %s leads after %v", i+1, leader.opts.NodeName, next.opts.NodeName, d)
		c.start(leader) // same DataDir and ports
		eventually(t, 10*time.Second, func() error {
			if s := leader.Status(); s.Leader != next.opts.NodeName || s.State != "follower" {
				return fmtErr("restarted %s: state %s leader %q", leader.opts.NodeName, s.State, s.Leader)
			}
			return nil
		})
		leader = next
	}
	slices.Sort(took)
	t.Logf("failover over %d trials: min %v median %v max %v", trials, took[0], took[trials/2], took[trials-1])
	c.checkNoOverlap()
}

// TestRestartedNodeRejoinsWithoutBootstrap restarts a follower from the same
// DataDir: it keeps its term and log, never bootstraps again, and catches up
// with what was committed while it was down.
func TestRestartedNodeRejoinsWithoutBootstrap(t *testing.T) {
	c, leader := formedCluster(t)
	follower := c.follower(leader)
	term, index := follower.raft().CurrentTerm(), follower.raft().LastIndex()
	c.stop(follower)
	if err := leader.SetDrained("web", "10.0.0.1:80", true); err != nil {
		t.Fatalf("drain while follower is down: %v", err)
	}
	c.start(follower)
	if got := follower.raft().CurrentTerm(); got < term {
		t.Fatalf("restarted term %d < %d: stable store lost", got, term)
	}
	if got := follower.raft().LastIndex(); got < index {
		t.Fatalf("restarted last index %d < %d: raft log lost", got, index)
	}
	eventually(t, 10*time.Second, func() error {
		in := follower.Intent()
		if len(in.Drained) != 1 || in.Drained[0] != (BackendRef{Pool: "web", Backend: "10.0.0.1:80"}) {
			return fmtErr("restarted follower intent %+v", in)
		}
		if s := follower.Status(); s.Leader != leader.opts.NodeName {
			return fmtErr("restarted follower sees leader %q", s.Leader)
		}
		return nil
	})
	if follower.formed.Load() {
		t.Fatal("restarted node bootstrapped again")
	}
	c.waitVoters(5*time.Second, "n0", "n1", "n2")
	if ls := c.leaders(); len(ls) != 1 || ls[0] != leader {
		t.Fatal("the restart disturbed the leader")
	}
}

// TestHealedGossipPartitionMergesViews cuts a follower's gossip until it and
// the others believe each other dead, then heals the cut. memberlist alone
// never probes a dead member again, so without the reconnect loop both views
// would stay split until a 30 s push-pull happened to pick the right node.
func TestHealedGossipPartitionMergesViews(t *testing.T) {
	c, leader := formedCluster(t)
	cutOff := c.follower(leader)
	cutOff.gcut.cut.Store(true)
	eventually(t, 20*time.Second, func() error {
		for _, tn := range c.nodes {
			for _, m := range c.nodes {
				if tn != m && (tn == cutOff || m == cutOff) && alive(tn, m.opts.NodeName) {
					return fmtErr("%s still sees %s alive", tn.opts.NodeName, m.opts.NodeName)
				}
			}
		}
		return nil
	})
	// Let the dead-member broadcasts spend their retransmissions on the cut,
	// so only a reconnect can bring the sides together again.
	time.Sleep(time.Second)
	cutOff.gcut.cut.Store(false)
	healed := time.Now()
	eventually(t, 10*time.Second, func() error {
		for _, tn := range c.nodes {
			for _, m := range c.nodes {
				if !alive(tn, m.opts.NodeName) {
					return fmtErr("%s sees %s dead", tn.opts.NodeName, m.opts.NodeName)
				}
			}
		}
		return nil
	})
	t.Logf("views merged %s after the heal", time.Since(healed).Round(time.Millisecond))
	reconnects := 0.0
	for _, tn := range c.nodes {
		reconnects += tn.metric(t, "vipd_election_gossip_reconnects_total")
	}
	if reconnects == 0 {
		t.Fatal("the views merged without a reconnect: the test did not exercise it")
	}
}

// alive reports whether tn's status lists member as alive.
func alive(tn *tnode, member string) bool {
	for _, m := range tn.Status().Members {
		if m.Name == member {
			return m.Alive
		}
	}
	return false
}

// TestFiveNodesAddAndLeaveWhileEventsRun grows a 5-node cluster by one and
// then lets a follower and the leader leave on purpose, checking the voter
// set and that announced leaderships never overlap.
func TestFiveNodesAddAndLeaveWhileEventsRun(t *testing.T) {
	c := newCluster(t, 5, 5, relaxedTiming, nil)
	c.waitLeader(20 * time.Second)
	c.waitVoters(10*time.Second, "n0", "n1", "n2", "n3", "n4")

	added := c.add(nil)
	c.waitVoters(10*time.Second, "n0", "n1", "n2", "n3", "n4", "n5")
	eventually(t, 10*time.Second, func() error {
		if s := added.Status(); s.State != "follower" || s.Leader == "" {
			return fmtErr("added node: state %s leader %q", s.State, s.Leader)
		}
		return nil
	})

	leader := c.leaders()[0]
	var follower *tnode
	for _, tn := range c.nodes {
		if tn != leader && tn != added {
			follower = tn
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := follower.Leave(ctx); err != nil {
		t.Fatalf("follower leave: %v", err)
	}
	c.stop(follower)
	var want []string
	for _, tn := range c.nodes {
		if tn != follower {
			want = append(want, tn.opts.NodeName)
		}
	}
	c.waitVoters(10*time.Second, want...)

	start := time.Now()
	if err := leader.Leave(ctx); err != nil {
		t.Fatalf("leader leave: %v", err)
	}
	t.Logf("leader %s left after %v", leader.opts.NodeName, time.Since(start))
	if leader.rec.isLeader() {
		t.Fatal("the node that left still announces leadership")
	}
	c.stop(leader)
	next := c.waitLeader(10*time.Second, leader)
	want = slices.DeleteFunc(want, func(s string) bool { return s == leader.opts.NodeName })
	c.waitVoters(10*time.Second, want...)
	t.Logf("%s leads after the leave", next.opts.NodeName)
	c.checkNoOverlap()
}
