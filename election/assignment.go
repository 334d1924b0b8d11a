package election

import (
	"errors"
	"fmt"
	"sort"

	"github.com/hashicorp/raft"
)

// VIPAssignment is one spread VIP's entry in the replicated assignment: its
// assignee (empty: nobody) and whether that node may be granted a lease on
// it (settled).
type VIPAssignment struct {
	VIP     string `json:"vip"`
	Node    string `json:"node"`
	Settled bool   `json:"settled"`
}

// LeaderRecord names the last leader that recorded its term; the
// assignment may change only in that term. The zero value: none yet.
type LeaderRecord struct {
	Node string `json:"node"`
	Term uint64 `json:"term"`
}

// holding is a VIPAssignment inside the fsm, keyed by VIP.
type holding struct {
	node    string
	settled bool
}

const (
	opLead   = "lead"   // the leader records its term: Node
	opAssign = "assign" // VIP gets a new assignee Node ("" nobody), unsettled
	opSettle = "settle" // VIP's assignee Node may now be granted it
	opForget = "forget" // VIP, assigned to nobody, leaves the assignment
)

// applyAssignmentLocked applies a lead or assignment command of the given
// Raft term. A lead returns the record it replaces. Assignment commands are
// refused unless the latest record is of their own term: a leader that has
// not recorded its term must not change the assignment, so that its
// successor can trust the record (docs/architecture.md, "Across leaders").
// A refused command changes nothing.
func (f *fsm) applyAssignmentLocked(c command, term uint64) (interface{}, error) {
	if c.Op == opLead {
		switch {
		case c.Node == "":
			return nil, errors.New("leader record without a node")
		case term < f.leader.Term:
			return nil, fmt.Errorf("leader record of term %d after one of term %d", term, f.leader.Term)
		}
		prev := f.leader
		f.leader = LeaderRecord{Node: c.Node, Term: term}
		return prev, nil
	}
	if f.leader.Node == "" || term != f.leader.Term {
		return nil, fmt.Errorf("assignment change in term %d, but the last leader record is of term %d", term, f.leader.Term)
	}
	if c.VIP == "" {
		return nil, errors.New("no VIP named")
	}
	cur, known := f.assignment[c.VIP]
	switch c.Op {
	case opAssign:
		f.assignment[c.VIP] = holding{node: c.Node}
	case opSettle:
		if !known || c.Node == "" || cur.node != c.Node {
			return nil, fmt.Errorf("settle %s on %q: it is assigned to %q", c.VIP, c.Node, cur.node)
		}
		f.assignment[c.VIP] = holding{node: c.Node, settled: true}
	case opForget:
		if known && cur.node != "" {
			return nil, fmt.Errorf("forget %s: still assigned to %s", c.VIP, cur.node)
		}
		delete(f.assignment, c.VIP)
	}
	return nil, nil
}

func (f *fsm) assignmentLocked() []VIPAssignment {
	out := make([]VIPAssignment, 0, len(f.assignment))
	for vip, h := range f.assignment {
		out = append(out, VIPAssignment{VIP: vip, Node: h.node, Settled: h.settled})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VIP < out[j].VIP })
	return out
}

// restoreAssignment reads a snapshot's assignment, refusing what Apply
// could never have written.
func restoreAssignment(in []VIPAssignment) (map[string]holding, error) {
	out := map[string]holding{}
	for _, a := range in {
		switch _, dup := out[a.VIP]; {
		case a.VIP == "":
			return nil, errors.New("assignment entry without a VIP")
		case dup:
			return nil, fmt.Errorf("VIP %s assigned twice", a.VIP)
		case a.Settled && a.Node == "":
			return nil, fmt.Errorf("VIP %s settled on nobody", a.VIP)
		}
		out[a.VIP] = holding{node: a.Node, settled: a.Settled}
	}
	return out, nil
}

// RecordLeadership commits this node's leader record for its term and
// returns the record it replaced. The leader calls it once per term before
// it grants a lease or changes the assignment, and hands the previous
// record to its lease granter.
func (n *Node) RecordLeadership() (LeaderRecord, error) {
	res, err := n.applyResult(command{Op: opLead, Node: n.opts.NodeName})
	if err != nil {
		return LeaderRecord{}, fmt.Errorf("record leadership of %s: %w", n.opts.NodeName, err)
	}
	prev, _ := res.(LeaderRecord)
	return prev, nil
}

// AssignVIP gives vip a new assignee, unsettled ("" for nobody). Only the
// leader, after RecordLeadership in its term.
func (n *Node) AssignVIP(vip, node string) error {
	if err := n.apply(command{Op: opAssign, VIP: vip, Node: node}); err != nil {
		return fmt.Errorf("assign %s to %q: %w", vip, node, err)
	}
	return nil
}

// SettleVIP lets vip's assignee node be granted it. The leader calls it
// once its lease granter says no other node can still hold vip.
func (n *Node) SettleVIP(vip, node string) error {
	if err := n.apply(command{Op: opSettle, VIP: vip, Node: node}); err != nil {
		return fmt.Errorf("settle %s on %s: %w", vip, node, err)
	}
	return nil
}

// ForgetVIP removes vip, assigned to nobody, from the assignment.
func (n *Node) ForgetVIP(vip string) error {
	if err := n.apply(command{Op: opForget, VIP: vip}); err != nil {
		return fmt.Errorf("forget %s: %w", vip, err)
	}
	return nil
}

// Round commits a barrier as a round of the lease protocol
// (docs/architecture.md, "Leases", step 2): an entry appended after the
// requests it answers arrived. It fails unless this node leads in term
// from before the barrier until after it committed, so the entry is of
// that term.
func (n *Node) Round(term uint64) error {
	rt, err := n.running()
	if err != nil {
		return err
	}
	inTerm := func() bool { return rt.raft.State() == raft.Leader && rt.raft.CurrentTerm() == term }
	if !inTerm() {
		return fmt.Errorf("lease round in term %d: %w", term, n.notLeader(rt))
	}
	if err := await(rt.raft.Barrier(n.opTimeout()), n.stop, n.opTimeout()); err != nil {
		return fmt.Errorf("lease round in term %d: %w", term, err)
	}
	if !inTerm() {
		return fmt.Errorf("lease round in term %d: %w", term, n.notLeader(rt))
	}
	return nil
}
