package lease

import (
	"slices"
	"time"
)

// Holding is one VIP's entry in the replicated assignment: its assignee,
// and whether the assignee may be granted it (settled).
type Holding struct {
	Node    string
	Settled bool
}

// View is the replicated assignment, VIP -> Holding, as a round leaves it.
type View map[string]Holding

func (v View) settledOn(vip, node string) bool {
	h, ok := v[vip]
	return ok && h.Settled && h.Node == node && node != ""
}

// Request is a renewal request as the leader received it.
type Request struct {
	Node    string
	Arrived time.Duration // the granter's clock when the request arrived
	Wants   []string
}

// Granter is the leader's side for one term: which VIPs a round grants,
// when a VIP may be given to another node, and which VIPs the leader holds
// itself. Create one when this node's leader record commits; drop it when
// leadership ends. It is not safe for concurrent use.
type Granter struct {
	t    Timing
	now  Clock
	self string

	// busy is, per VIP, the clock reading before which a node other than
	// its settled assignee may still hold a lease on it; a VIP absent is free.
	busy map[string]time.Duration
}

// NewGranter starts a term whose leader record has just committed. view is
// the assignment as that record leaves it, and prev the node of the record
// before it ("" for none). Every lease an earlier leader granted started
// before now (a later commit of theirs is impossible), so it ends within
// D′: a VIP settled on a follower may go to another node only D′ from now,
// and so may an unsettled one, whose last holder is unknown. The VIPs
// settled on prev were held by a leader, which drops them on losing
// leadership before a successor can win (docs/architecture.md rules 2 and 6),
// and those settled on this node are held by nobody else: both are free.
func NewGranter(t Timing, now Clock, self string, view View, prev string) *Granter {
	g := &Granter{t: t, now: now, self: self, busy: map[string]time.Duration{}}
	start := now()
	for vip, h := range view {
		if h.Settled && h.Node != "" && (h.Node == prev || h.Node == self) {
			continue
		}
		g.busy[vip] = start + t.Wait()
	}
	return g
}

// Round is a round appended now, answering requests that arrived before
// it; view is the assignment as the round's entry leaves it. It returns,
// per requesting node, the VIPs it is granted once the entry commits: those
// it asked for and that are settled on it. Each grant keeps the VIP busy
// for D′ after the request's arrival. A request that claims to arrive
// after now answers nothing.
func (g *Granter) Round(reqs []Request, view View) map[string][]string {
	out := map[string][]string{}
	now := g.now()
	for _, r := range reqs {
		if r.Arrived > now {
			continue
		}
		for _, vip := range r.Wants {
			if !view.settledOn(vip, r.Node) || slices.Contains(out[r.Node], vip) {
				continue
			}
			out[r.Node] = append(out[r.Node], vip)
			if until := r.Arrived + g.t.Wait(); until > g.busy[vip] {
				g.busy[vip] = until
			}
		}
	}
	for n := range out {
		slices.Sort(out[n])
	}
	return out
}

// MayGive reports whether vip may be settled on node now, and if not, how
// long to wait. Its settled assignee may always have it (a renewal); any
// other node only once every lease on it has surely ended. Before a move
// away from this node the caller has stopped holding vip itself.
func (g *Granter) MayGive(vip, node string, view View) (bool, time.Duration) {
	if view.settledOn(vip, node) {
		return true, 0
	}
	if wait := g.busy[vip] - g.now(); wait > 0 {
		return false, wait
	}
	return true, 0
}

// Released notes that node, vip's settled assignee, let it go (it deleted
// the address and no longer asks for it): nobody holds vip, so it is free
// at once. A release from any other node changes nothing.
func (g *Granter) Released(vip, node string, view View) {
	if view.settledOn(vip, node) {
		delete(g.busy, vip)
	}
}

// LeaderHolds reports whether the leader itself may hold vip now: it is
// settled on this node. The leader holds it under its leadership, not a
// lease, and drops it when leadership ends (rule 2).
func (g *Granter) LeaderHolds(vip string, view View) bool {
	return view.settledOn(vip, g.self)
}
