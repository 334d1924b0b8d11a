package election

import (
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// A follower of hashicorp/raft checks for a silent leader on a timer that
// re-arms at a random point in [heartbeat, 2×heartbeat), so it starts an
// election between one and three heartbeat timeouts after the leader's last
// contact. A voter that still knows a leader refuses
// (pre-)votes, so a failover waits for the slower of two such timers. The
// leader watch checks each follower exactly when its leader's last contact
// becomes one heartbeat timeout old and makes raft look at once. raft still
// decides with its own rule (no contact for a heartbeat timeout), so the
// earliest moment a follower may campaign, and therefore the lease rule
// (docs/architecture.md rule 6), is unchanged: only the random wait after
// it goes. That wait also let a follower ride out a stall a little longer
// than the timeout, which the watch does not; so it runs only where
// Timing.WatchLeader asks for it (the fast profile, docs/failover.md).
//
// Followers that look at the same moment campaign at the same moment: each
// grants the other's pre-vote (neither knows a leader any more), both run
// the real election in the same term, vote for themselves, and neither
// wins until raft's random election timeout sends one of them again
// (60-120 ms with fast, seen in make bench-failover's SIGKILL trials). So
// each follower looks a step later per rank: its place among the voters
// other than the leader, by ID. The first to look is refused by the others,
// which still know the leader, and the next wins with its vote.

// followerView is what the leader watch reads of raft.
type followerView interface {
	State() raft.RaftState
	LeaderWithID() (raft.ServerAddress, raft.ServerID)
	LastContact() time.Time
}

// leaderSilence says, at now for a look that was due at due, whether the
// follower's leader has been silent for timeout, and when to look next.
//
// A look more than a tenth of timeout late means this process did not run
// for a while (CPU starvation, a stall of the host): heartbeats that came
// meanwhile may still wait unread in its sockets, so it looks again a fifth
// of timeout later, after at least one heartbeat interval (raft sends every
// tenth to fifth of it), instead of calling the leader dead at once.
// stagger (asked only once the contact is timeout old) is how much longer
// this follower waits for its leader (its rank's step).
func leaderSilence(r followerView, timeout time.Duration, stagger func(leader raft.ServerID) time.Duration, now, due time.Time) (silent bool, wait time.Duration) {
	if r.State() != raft.Follower {
		return false, timeout
	}
	addr, leader := r.LeaderWithID()
	if addr == "" {
		return false, timeout // raft already gave up on it, or never knew one
	}
	age := now.Sub(r.LastContact())
	if age < timeout {
		return false, timeout - age
	}
	if after := timeout + stagger(leader); age < after {
		return false, after - age
	}
	if now.Sub(due) > timeout/10 {
		return false, timeout / 5
	}
	return true, timeout
}

// voterRank is self's place, from 0, among the voters other than leader,
// ordered by ID: the same order on every node. 0 when self is not among them.
func voterRank(servers []raft.Server, self, leader raft.ServerID) int {
	var ids []raft.ServerID
	for _, s := range servers {
		if s.Suffrage == raft.Voter && s.ID != leader {
			ids = append(ids, s.ID)
		}
	}
	slices.Sort(ids)
	return max(slices.Index(ids, self), 0)
}

// watchLeader runs until stop: it wakes when the leader's last contact turns
// timeout old and, if nothing arrived meanwhile, calls expire.
func watchLeader(r followerView, timeout time.Duration, stagger func(raft.ServerID) time.Duration, stop <-chan struct{}, expire func()) {
	due := time.Now().Add(timeout)
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		silent, wait := leaderSilence(r, timeout, stagger, now, due)
		if silent {
			expire()
		}
		due = now.Add(wait)
		t.Reset(wait)
	}
}

// watchStepsPerTimeout divides the heartbeat timeout into the step between
// two followers' looks: 5 ms with fast, several pre-vote round trips on a
// LAN, so the first follower's campaign has been refused before the next
// one looks.
const watchStepsPerTimeout = 12

// leaderWatch is the node's watch goroutine (started by Start, ended by stop).
func (n *Node) leaderWatch(rt *running) {
	defer n.wg.Done()
	step := n.opts.Timing.Heartbeat / watchStepsPerTimeout
	stagger := func(leader raft.ServerID) time.Duration {
		f := rt.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return 0
		}
		return time.Duration(voterRank(f.Configuration().Servers, raft.ServerID(n.opts.NodeName), leader)) * step
	}
	watchLeader(rt.raft, n.opts.Timing.Heartbeat, stagger, n.stop, func() {
		n.log.Info("leader silent for the heartbeat timeout; raft checks now",
			zap.Duration("since_contact", time.Since(rt.raft.LastContact())))
		if err := expireHeartbeat(rt.raft); err != nil {
			n.log.Warn("leader watch: raft refused the reload", zap.Error(err))
		}
	})
}

// expireHeartbeat makes a follower's raft check its heartbeat timeout now.
// raft re-arms a follower's timer only when ReloadConfig shortens
// HeartbeatTimeout, so it is shortened by a nanosecond and set back: raft
// checks with one of the two values, both longer than the lease.
func expireHeartbeat(r *raft.Raft) error {
	rc := r.ReloadableConfig()
	want := rc.HeartbeatTimeout
	rc.HeartbeatTimeout = want - time.Nanosecond
	if err := r.ReloadConfig(rc); err != nil {
		return err
	}
	rc.HeartbeatTimeout = want
	return r.ReloadConfig(rc)
}
