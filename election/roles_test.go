package election

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// forceLeader makes raft hand leadership to target, bypassing the
// election package's choice (to put a witness or a maintenance node in
// charge on purpose).
func forceLeader(t *testing.T, from, target *tnode) {
	t.Helper()
	err := from.raft().LeadershipTransferToServer(raftID(target), raftAddr(target)).Error()
	if err != nil {
		t.Fatalf("force leadership %s -> %s: %v", from.opts.NodeName, target.opts.NodeName, err)
	}
}

// TestWitnessNeverStaysLeaderAndTwoVotersSurviveOneLoss runs two voters and
// a witness: the witness hands leadership back when it wins, never announces
// a gain, and the pair survives losing the leading voter.
func TestWitnessNeverStaysLeaderAndTwoVotersSurviveOneLoss(t *testing.T) {
	c := newCluster(t, 3, 3, relaxedTiming, func(i int, o *Options) {
		if i == 2 {
			o.Role = RoleWitness
		}
	})
	witness := c.nodes[2]
	leader := c.waitLeader(15 * time.Second)
	c.waitVoters(5*time.Second, "n0", "n1", "n2")
	if s := witness.Status(); s.State != "witness" {
		t.Fatalf("witness state %q", s.State)
	}

	states := watchStates(t, witness)
	forced := time.Now()
	forceLeader(t, leader, witness)
	// The voter the witness hands back to announces a gain after the force;
	// the old leader may still announce until its loss is emitted.
	var back *tnode
	eventually(t, 5*time.Second, func() error {
		ls := c.leaders()
		if len(ls) != 1 || ls[0] == witness || !ls[0].rec.gainedAt().After(forced) {
			return fmtErr("no voter has announced a gain since the witness was forced to lead")
		}
		back = ls[0]
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		if s := witness.Status(); s.State != "witness" || s.Leader != back.opts.NodeName {
			return fmtErr("witness: state %s leader %q", s.State, s.Leader)
		}
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		if gains, drops := states.counts(); gains == 0 || drops != gains {
			return fmtErr("witness became raft leader %d times and left %d times: want it to win and hand back", gains, drops)
		}
		return nil
	})

	start := time.Now()
	c.stop(back)
	survivor := c.waitLeader(10*time.Second, back)
	if survivor == witness {
		t.Fatal("witness announced leadership")
	}
	t.Logf("after losing %s, %s leads in %v", back.opts.NodeName, survivor.opts.NodeName, survivor.rec.gainedAt().Sub(start))
	time.Sleep(time.Second)
	if ls := c.leaders(); len(ls) != 1 || ls[0] != survivor {
		t.Fatal("leadership did not stay with the surviving voter")
	}
	if g := witness.rec.gains(); g != 0 {
		t.Fatalf("witness announced %d gains", g)
	}
	c.checkNoOverlap()
}

// TestMaintenanceNodeNeverLeads puts the leader in maintenance: it withdraws
// at once and hands off; forced back into leadership it never announces.
func TestMaintenanceNodeNeverLeads(t *testing.T) {
	c, leader := formedCluster(t)
	gains := leader.rec.gains()
	states := watchStates(t, leader)
	if err := leader.SetMaintenance(leader.opts.NodeName, true); err != nil {
		t.Fatalf("set maintenance: %v", err)
	}
	next := c.waitLeader(5*time.Second, leader)
	eventually(t, 5*time.Second, func() error {
		for _, tn := range c.nodes {
			if in := tn.Intent(); len(in.Maintenance) != 1 || in.Maintenance[0] != leader.opts.NodeName {
				return fmtErr("%s intent %+v", tn.opts.NodeName, in)
			}
		}
		return nil
	})
	forceLeader(t, next, leader)
	c.waitLeader(5*time.Second, leader)
	time.Sleep(500 * time.Millisecond)
	if g := leader.rec.gains(); g != gains {
		t.Fatalf("node in maintenance announced %d new gains", g-gains)
	}
	eventually(t, 5*time.Second, func() error {
		if raftGains, drops := states.counts(); raftGains < 1 || drops < 2 {
			return fmtErr("node in maintenance won raft leadership %d times and left it %d times: want it to hand off both times it led", raftGains, drops)
		}
		return nil
	})

	cur := c.leaders()[0]
	if err := cur.SetMaintenance(leader.opts.NodeName, false); err != nil {
		t.Fatalf("clear maintenance: %v", err)
	}
	eventually(t, 5*time.Second, func() error {
		if len(leader.Intent().Maintenance) != 0 {
			return errors.New("maintenance not cleared on the node")
		}
		return nil
	})
	c.checkNoOverlap()
}

// TestUnfitLeaderTransfersToFitPeer makes the leader unfit: after the grace
// it hands leadership to a peer reporting itself fit, not to an unfit one.
func TestUnfitLeaderTransfersToFitPeer(t *testing.T) {
	const grace = 700 * time.Millisecond
	c := newCluster(t, 3, 3, relaxedTiming, func(i int, o *Options) { o.FitnessGrace = grace })
	leader := c.waitLeader(15 * time.Second)
	c.waitVoters(5*time.Second, "n0", "n1", "n2")
	var fit, unfit *tnode
	for _, tn := range c.nodes {
		switch {
		case tn == leader:
		case fit == nil && tn.opts.NodeName != "n0":
			fit = tn
		default:
			unfit = tn
		}
	}
	if fit == nil || unfit == nil {
		t.Fatal("could not pick peers")
	}
	fit.SetFitness(Fitness{Pools: 2, HealthyPools: 2, LinkUp: true})
	unfit.SetFitness(Fitness{Pools: 2, HealthyPools: 1, LinkUp: true})
	leader.SetFitness(Fitness{Pools: 2, HealthyPools: 2, LinkUp: true})
	time.Sleep(500 * time.Millisecond) // let gossip carry the fitness
	start := time.Now()
	leader.SetFitness(Fitness{Pools: 2, HealthyPools: 0, LinkUp: true})
	next := c.waitLeader(10*time.Second, leader)
	took := next.rec.gainedAt().Sub(start)
	t.Logf("unfit %s handed off to %s after %v (grace %v)", leader.opts.NodeName, next.opts.NodeName, took, grace)
	if next != fit {
		t.Fatalf("leadership went to %s, want the fit peer %s", next.opts.NodeName, fit.opts.NodeName)
	}
	if took < grace {
		t.Fatalf("handed off after %v, before the grace %v", took, grace)
	}
	eventually(t, 5*time.Second, func() error {
		for _, m := range next.Status().Members {
			if m.Name == leader.opts.NodeName && (m.Pools != 2 || m.HealthyPools != 0) {
				return fmtErr("gossiped fitness of %s: %+v", m.Name, m)
			}
		}
		return nil
	})

	// Everyone unfit: the leader keeps leadership rather than leaving none.
	fit.SetFitness(Fitness{Pools: 2, HealthyPools: 0, LinkUp: true})
	time.Sleep(3 * grace)
	if ls := c.leaders(); len(ls) != 1 || ls[0] != fit {
		t.Fatal("with no fit peer the leader should keep leading")
	}
	c.checkNoOverlap()
}

// TestLeaderWhoseVIPHoldFailedHandsOff: a leader whose VIP claim failed, with
// its link up and every pool healthy, is unfit on that count alone and hands
// off after the grace; /status's member JSON names the hold state.
func TestLeaderWhoseVIPHoldFailedHandsOff(t *testing.T) {
	const grace = 700 * time.Millisecond
	c := newCluster(t, 3, 3, relaxedTiming, func(i int, o *Options) { o.FitnessGrace = grace })
	leader := c.waitLeader(15 * time.Second)
	c.waitVoters(5*time.Second, "n0", "n1", "n2")
	leader.SetFitness(Fitness{Pools: 1, HealthyPools: 1, LinkUp: true, VIPHoldFailed: true})
	next := c.waitLeader(10*time.Second, leader)
	eventually(t, 5*time.Second, func() error {
		b, err := json.Marshal(next.Status())
		if err != nil {
			return err
		}
		var st struct {
			Members []map[string]any `json:"members"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
		for _, m := range st.Members {
			if m["name"] != leader.opts.NodeName {
				continue
			}
			if m["vip_hold_failed"] != true || m["link_up"] != true || m["fit"] != false || m["healthy_pools"] != 1.0 {
				return fmtErr("%s in the new leader's status: %v", leader.opts.NodeName, m)
			}
			return nil
		}
		return fmtErr("%s missing from the new leader's status", leader.opts.NodeName)
	})
	c.checkNoOverlap()
}

// TestLeadershipLostAndRegainedEmitsLossThenGain moves leadership away and
// straight back, several times: the node's events alternate, so each loss
// is reported before the next gain.
func TestLeadershipLostAndRegainedEmitsLossThenGain(t *testing.T) {
	c, leader := formedCluster(t)
	other := c.follower(leader)
	for round := range 3 {
		gains := leader.rec.gains()
		forceLeader(t, leader, other)
		eventually(t, 5*time.Second, func() error {
			if other.raft().State() != raft.Leader {
				return fmtErr("round %d: %s is not raft leader", round+1, other.opts.NodeName)
			}
			return nil
		})
		forceLeader(t, other, leader)
		eventually(t, 10*time.Second, func() error {
			if leader.rec.gains() == gains || !leader.rec.isLeader() {
				return fmtErr("round %d: %s did not announce leadership again", round+1, leader.opts.NodeName)
			}
			return nil
		})
	}
	leader.rec.mu.Lock()
	events := append([]Event(nil), leader.rec.events...)
	leader.rec.mu.Unlock()
	for i, e := range events {
		if e.Leader != (i%2 == 0) {
			t.Fatalf("events %v: event %d is not the alternation gain, loss, gain, ...", events, i)
		}
	}
	if len(events) != 7 {
		t.Fatalf("events %v: want 4 gains and 3 losses", events)
	}
	c.checkNoOverlap()
}
