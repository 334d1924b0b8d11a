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
// (60-120 ms with fast, seen in make bench-failover's SIGKILL trials). The
// voters other than the leader, ordered by ID, therefore take turns: the
// first looks when its contact turns timeout old; each next one looks once
// its contact is that old too and the one before it has asked for a
// pre-vote since (raft observes the request). That one is refused, since
// this follower still knew the leader; it is now a candidate, so it grants
// this follower's pre-vote and vote, and this one wins. A fixed step per
// turn would not do: raft's leader sends each follower its heartbeats at a
// random tenth to fifth of the timeout on its own, so two followers' last
// contacts differ by up to a fifth of it. A follower whose predecessor
// never asks (dead as well, or cut off) looks a quarter timeout later per
// turn.

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
// turn (asked only once the contact is timeout old) is how much longer this
// follower waits for its turn after a contact at contact.
func leaderSilence(r followerView, timeout time.Duration, turn func(leader raft.ServerID, contact time.Time) time.Duration, now, due time.Time) (silent bool, wait time.Duration) {
	if r.State() != raft.Follower {
		return false, timeout
	}
	addr, leader := r.LeaderWithID()
	if addr == "" {
		return false, timeout // raft already gave up on it, or never knew one
	}
	contact := r.LastContact()
	age := now.Sub(contact)
	if age < timeout {
		return false, timeout - age
	}
	if after := timeout + turn(leader, contact); age < after {
		return false, after - age
	}
	if now.Sub(due) > timeout/10 {
		return false, timeout / 5
	}
	return true, timeout
}

// voterTurn is self's place, from 0, among the voters other than leader,
// ordered by ID (the same order on every node), and the voter just before
// it. 0 and "" when self is first or not among them.
func voterTurn(servers []raft.Server, self, leader raft.ServerID) (rank int, before raft.ServerID) {
	var ids []raft.ServerID
	for _, s := range servers {
		if s.Suffrage == raft.Voter && s.ID != leader {
			ids = append(ids, s.ID)
		}
	}
	slices.Sort(ids)
	if rank = slices.Index(ids, self); rank <= 0 {
		return 0, ""
	}
	return rank, ids[rank-1]
}

// turnTaker decides a follower's turn from the pre-votes it has been asked
// for; only the watch goroutine uses it.
type turnTaker struct {
	order func(leader raft.ServerID) (rank int, before raft.ServerID)
	step  time.Duration               // the wait per turn when the one before never asks
	asked map[raft.ServerID]time.Time // each candidate's latest pre-vote request
}

// turn is leaderSilence's turn: nothing for the first, nothing once the one
// before asked after contact, else step per rank.
func (t *turnTaker) turn(leader raft.ServerID, contact time.Time) time.Duration {
	rank, before := t.order(leader)
	if rank == 0 || t.asked[before].After(contact) {
		return 0
	}
	return time.Duration(rank) * t.step
}

// watchLeader runs until stop: it wakes when the leader's last contact turns
// timeout old, or raft observes a pre-vote request (on preVotes), and calls
// expire once the leader is silent and it is this follower's turn.
func watchLeader(r followerView, timeout time.Duration, tt *turnTaker, preVotes <-chan raft.Observation, stop <-chan struct{}, expire func()) {
	due := time.Now().Add(timeout)
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case o := <-preVotes:
			if req, ok := o.Data.(raft.RequestPreVoteRequest); ok {
				tt.asked[raft.ServerID(req.ID)] = time.Now()
			}
		case <-t.C:
		}
		now := time.Now()
		silent, wait := leaderSilence(r, timeout, tt.turn, now, due)
		if silent {
			expire()
		}
		due = now.Add(wait)
		t.Reset(wait)
	}
}

// watchTurnsPerTimeout divides the heartbeat timeout into the wait per turn
// when the follower before never asks: longer than the spread of two
// followers' last contacts (a fifth of the timeout) and a round trip.
const watchTurnsPerTimeout = 4

// leaderWatch is the node's watch goroutine (started by Start, ended by
// stop). It observes the pre-vote requests raft receives.
func (n *Node) leaderWatch(rt *running) {
	defer n.wg.Done()
	preVotes := make(chan raft.Observation, 8)
	obs := raft.NewObserver(preVotes, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RequestPreVoteRequest)
		return ok
	})
	rt.raft.RegisterObserver(obs)
	defer rt.raft.DeregisterObserver(obs)
	self := raft.ServerID(n.opts.NodeName)
	tt := &turnTaker{
		step:  n.opts.Timing.Heartbeat / watchTurnsPerTimeout,
		asked: map[raft.ServerID]time.Time{},
		order: func(leader raft.ServerID) (int, raft.ServerID) {
			f := rt.raft.GetConfiguration()
			if err := f.Error(); err != nil {
				return 0, ""
			}
			return voterTurn(f.Configuration().Servers, self, leader)
		},
	}
	watchLeader(rt.raft, n.opts.Timing.Heartbeat, tt, preVotes, n.stop, func() {
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
