package election

import (
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestDeadMemberRedialledUntilReconnectTimeout crashes a follower: the
// leader redials it while it has been dead for less than the reconnect
// timeout, then forgets it and never dials it again, while it stays a Raft
// voter. A second dead member, dead for less time, is still redialled: it
// shows the reconnect rounds went on after the first was forgotten. The
// forgotten node rejoins when it restarts.
func TestDeadMemberRedialledUntilReconnectTimeout(t *testing.T) {
	const timeout = 2 * time.Hour
	clock := newFakeClock()
	c := newCluster(t, 3, 3, relaxedTiming, func(i int, o *Options) { o.now, o.ReconnectTimeout = clock.Now, timeout })
	leader := c.waitLeader(15 * time.Second)
	c.waitVoters(5*time.Second, "n0", "n1", "n2")
	crashed := c.follower(leader)
	name, addr := crashed.opts.NodeName, crashed.opts.GossipBind
	c.stop(crashed)
	eventually(t, 20*time.Second, func() error {
		if p, ok := leader.gossip.get(name); !ok || p.alive {
			return fmtErr("the leader does not believe %s dead yet", name)
		}
		return nil
	})
	deadDials := leader.gcut.dialsTo(addr) // memberlist's own probes end at death

	clock.advance(time.Hour)
	ghostPort := freePort(t) // nothing listens: every dial fails
	ghostAddr := fmt.Sprintf("127.0.0.1:%d", ghostPort)
	ghostMeta, err := json.Marshal(meta{RaftAddr: "127.0.0.1:1", Role: RoleVoter})
	if err != nil {
		t.Fatal(err)
	}
	// What memberlist calls when it declares a member dead.
	leader.gossip.NotifyLeave(&memberlist.Node{Name: "ghost", Addr: net.IPv4(127, 0, 0, 1), Port: uint16(ghostPort), Meta: ghostMeta})

	eventually(t, 20*time.Second, func() error {
		if d, g := leader.gcut.dialsTo(addr)-deadDials, leader.gcut.dialsTo(ghostAddr); d == 0 || g == 0 {
			return fmtErr("before the timeout: %d redials of %s, %d of the ghost", d, name, g)
		}
		return nil
	})

	clock.advance(time.Hour + time.Minute) // crashed: dead 2h1m; ghost: 1h1m
	eventually(t, 20*time.Second, func() error {
		if _, ok := leader.gossip.get(name); ok {
			return fmtErr("%s is still remembered after the reconnect timeout", name)
		}
		return nil
	})
	if got := leader.metric(t, "vipd_election_gossip_members_forgotten_total"); got != 1 {
		t.Errorf("forgotten members counted: %v, want 1", got)
	}
	forgotten, ghost := leader.gcut.dialsTo(addr), leader.gcut.dialsTo(ghostAddr)
	eventually(t, 30*time.Second, func() error {
		if g := leader.gcut.dialsTo(ghostAddr) - ghost; g < 2 {
			return fmtErr("%d reconnect rounds since %s was forgotten, want 2", g, name)
		}
		return nil
	})
	if d := leader.gcut.dialsTo(addr) - forgotten; d != 0 {
		t.Fatalf("%s was dialled %d times after it was forgotten", name, d)
	}
	if _, ok := leader.gossip.get("ghost"); !ok {
		t.Fatal("the ghost, dead for less than the timeout, was forgotten")
	}

	// Raft membership is not gossip's to change.
	c.waitVoters(time.Second, "n0", "n1", "n2")
	for _, m := range leader.Status().Members {
		if m.Name == name && (m.Alive || !m.Voter) {
			t.Fatalf("forgotten member in status: %+v, want a voter not alive", m)
		}
	}

	c.start(crashed)
	eventually(t, 20*time.Second, func() error {
		if !alive(leader, name) {
			return fmtErr("restarted %s not back in the leader's gossip", name)
		}
		return nil
	})
}
