package election

import "testing"

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
