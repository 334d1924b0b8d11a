// Package placement decides which node should hold each spread VIP
// (docs/architecture.md, "Spread VIPs: leases"): balanced, sticky, with the
// operator's preferences, never on a witness, a node in maintenance or a
// node unfit to serve the VIP. It is pure: the leader calls Place with what
// it knows and proposes the difference through Raft.
package placement

import (
	"cmp"
	"slices"
)

// Placements of a VIP.
const (
	Leader = "leader" // held by the Raft leader (rules 1-9)
	Spread = "spread" // assigned to one fit voter, under a lease
)

// Rebalance modes.
const (
	Manual = "manual" // VIPs move only when their node stops being fit, leaves, or the operator moves them
	Auto   = "auto"   // also one VIP at a time when the spread is uneven by more than one
)

// VIP is one VIP as placement sees it.
type VIP struct {
	Address   string
	Placement string   // Leader or Spread; Leader VIPs are left alone
	Prefer    []string // node names, most preferred first; may name nodes not (yet) members
	Frontends []string // frontends listening on the VIP: its holder needs a healthy backend for each
}

// Member is one node of the cluster.
type Member struct {
	Name        string
	Witness     bool
	Maintenance bool
	// Fit is the node's own fitness and liveness as the leader sees it:
	// gossip says fit, and it renews its leases (the leader itself: always).
	Fit bool
	// Healthy lists the frontends for which the node has a healthy backend.
	Healthy []string
}

// Input is what the leader knows when it places.
type Input struct {
	VIPs    []VIP
	Members []Member
	// Current maps each spread VIP to its assignee; a VIP absent or mapped
	// to "" is unassigned.
	Current map[string]string
	// Moving is true while a move is in flight (an assignment not yet
	// settled): auto rebalancing waits for it.
	Moving    bool
	Rebalance string // Manual or Auto
}

// Reasons a VIP moves.
const (
	ReasonNew       = "new"       // it had no assignee
	ReasonUnfit     = "unfit"     // its node may no longer hold it
	ReasonGone      = "gone"      // its node is no longer a member
	ReasonRebalance = "rebalance" // auto: its node holds more than one VIP above the least loaded
)

// Move is one change of assignee.
type Move struct {
	VIP, From, To, Reason string
}

// Result is the next assignment (every spread VIP; "" where no node may
// hold it) and the moves that lead there from Current, sorted by VIP.
type Result struct {
	Assignment map[string]string
	Moves      []Move
}

// Place computes the next assignment. A VIP keeps its node while that node
// may hold it; a VIP without one goes to its first eligible preferred
// node, else to the eligible node holding the fewest spread VIPs (by name
// on a tie). With Auto, and no move in flight, one VIP moves from a most
// loaded node to a least loaded one when they differ by more than one; a
// VIP on a node it prefers stays.
func Place(in Input) Result {
	in.Members = slices.Clone(in.Members)
	slices.SortFunc(in.Members, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	members := map[string]Member{}
	for _, m := range in.Members {
		members[m.Name] = m
	}
	load := map[string]int{}
	for _, m := range in.Members {
		if eligibleNode(m) {
			load[m.Name] = 0
		}
	}
	vips := slices.Clone(in.VIPs)
	slices.SortFunc(vips, func(a, b VIP) int { return cmp.Compare(a.Address, b.Address) })
	res := Result{Assignment: map[string]string{}}
	var orphans []VIP
	for _, v := range vips {
		if v.Placement != Spread {
			continue
		}
		cur := in.Current[v.Address]
		m, member := members[cur]
		switch {
		case cur != "" && member && Eligible(m, v):
			res.Assignment[v.Address] = cur
			load[cur]++
		default:
			orphans = append(orphans, v)
		}
	}
	for _, v := range orphans {
		cur := in.Current[v.Address]
		to := pick(v, in.Members, load)
		res.Assignment[v.Address] = to
		if to != "" {
			load[to]++
		}
		if to == cur {
			continue
		}
		reason := ReasonNew
		if _, member := members[cur]; cur != "" && member {
			reason = ReasonUnfit
		} else if cur != "" {
			reason = ReasonGone
		}
		res.Moves = append(res.Moves, Move{VIP: v.Address, From: cur, To: to, Reason: reason})
	}
	if in.Rebalance == Auto && !in.Moving && len(res.Moves) == 0 {
		if mv, ok := rebalance(vips, in.Members, res.Assignment, load); ok {
			res.Assignment[mv.VIP] = mv.To
			res.Moves = append(res.Moves, mv)
		}
	}
	slices.SortFunc(res.Moves, func(a, b Move) int { return cmp.Compare(a.VIP, b.VIP) })
	return res
}

// eligibleNode says whether m may hold spread VIPs at all.
func eligibleNode(m Member) bool { return !m.Witness && !m.Maintenance && m.Fit }

// Eligible says whether m may hold v: it may hold VIPs, and it has a
// healthy backend for each of v's frontends.
func Eligible(m Member, v VIP) bool {
	if !eligibleNode(m) {
		return false
	}
	for _, fe := range v.Frontends {
		if !slices.Contains(m.Healthy, fe) {
			return false
		}
	}
	return true
}

// pick chooses v's node: its first eligible preferred node, else the
// least loaded eligible one, by name on a tie; "" if none may hold it.
func pick(v VIP, members []Member, load map[string]int) string {
	for _, name := range v.Prefer {
		for _, m := range members {
			if m.Name == name && Eligible(m, v) {
				return name
			}
		}
	}
	best := ""
	for _, m := range members {
		if !Eligible(m, v) {
			continue
		}
		if best == "" || load[m.Name] < load[best] || load[m.Name] == load[best] && m.Name < best {
			best = m.Name
		}
	}
	return best
}

// rebalance finds one move that evens the spread: from a most loaded node
// to a least loaded one that may hold the VIP, when their counts differ by
// more than one. VIPs on a node they prefer are not moved; among the rest,
// one that prefers the target goes first, then by address.
func rebalance(vips []VIP, members []Member, assign map[string]string, load map[string]int) (Move, bool) {
	var best Move
	bestScore, found := 0, false
	for _, v := range vips {
		from := assign[v.Address]
		if v.Placement != Spread || from == "" || slices.Contains(v.Prefer, from) {
			continue
		}
		for _, m := range members {
			if !Eligible(m, v) || load[from]-load[m.Name] <= 1 {
				continue
			}
			// Larger gap first, then a target the VIP prefers, then by VIP and node name.
			score := 2 * (load[from] - load[m.Name])
			if slices.Contains(v.Prefer, m.Name) {
				score++
			}
			if !found || score > bestScore {
				best, bestScore, found = Move{VIP: v.Address, From: from, To: m.Name, Reason: ReasonRebalance}, score, true
			}
		}
	}
	return best, found
}
