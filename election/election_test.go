package election

import (
	"testing"
	"time"
)

func TestBootstrapExpectElectsExactlyOneLeader(t *testing.T) {
	c := newCluster(t, 3, 3, nil)
	leader := c.waitLeader(15 * time.Second)
	c.waitVoters(5*time.Second, "n0", "n1", "n2")
	bootstrapped := 0
	for _, tn := range c.nodes {
		bootstrapped += tn.logs.FilterMessage("bootstrapped raft cluster").Len()
	}
	if bootstrapped != 1 {
		t.Fatalf("%d nodes bootstrapped, want exactly 1", bootstrapped)
	}
	if c.nodes[0].logs.FilterMessage("bootstrapped raft cluster").Len() != 1 {
		t.Fatal("the lowest-named node did not bootstrap")
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
	c.checkNoOverlap()
}
