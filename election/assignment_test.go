package election

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// roundTrip restores a new fsm from a snapshot of f.
func roundTrip(t *testing.T, f *fsm) *fsm {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM(func() {})
	if err := g.Restore(sink.reader()); err != nil {
		t.Fatal(err)
	}
	return g
}

// applyAt applies c as a committed entry of term.
func applyAt(t *testing.T, f *fsm, term uint64, c command) interface{} {
	t.Helper()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Type: raft.LogCommand, Data: data, Index: 1, Term: term})
}

// The assignment changes only in the term of the latest leader record: a
// leader that has not recorded its term (or one of an older term) is
// refused, so a new leader can trust that no grant came after the record
// it inherits. A lead returns the record it replaces.
func TestAssignmentChangesOnlyInTheRecordedTerm(t *testing.T) {
	f := newFSM(func() {})
	if err, ok := applyAt(t, f, 2, command{Op: opAssign, VIP: "v", Node: "a"}).(error); !ok {
		t.Fatalf("assign before any leader record accepted: %v", err)
	}
	if prev := applyAt(t, f, 2, command{Op: opLead, Node: "a"}); prev != (LeaderRecord{}) {
		t.Fatalf("first record replaced %v, want none", prev)
	}
	if r := applyAt(t, f, 2, command{Op: opAssign, VIP: "v", Node: "b"}); r != nil {
		t.Fatalf("assign in the recorded term: %v", r)
	}
	if _, ok := applyAt(t, f, 3, command{Op: opSettle, VIP: "v", Node: "b"}).(error); !ok {
		t.Fatal("settle by the leader of term 3, which has not recorded its term, accepted")
	}
	if prev := applyAt(t, f, 3, command{Op: opLead, Node: "c"}); prev != (LeaderRecord{Node: "a", Term: 2}) {
		t.Fatalf("record of term 3 replaced %v, want a's of term 2", prev)
	}
	if _, ok := applyAt(t, f, 2, command{Op: opLead, Node: "a"}).(error); !ok {
		t.Fatal("a record of an older term accepted")
	}
	for _, c := range []command{
		{Op: opSettle, VIP: "v", Node: "a"}, // not its assignee
		{Op: opSettle, VIP: "w", Node: "a"}, // unknown VIP
		{Op: opForget, VIP: "v"},            // still assigned
		{Op: opAssign, Node: "a"},           // no VIP
		{Op: opLead},                        // no node
	} {
		if _, ok := applyAt(t, f, 3, c).(error); !ok {
			t.Errorf("%+v accepted", c)
		}
	}
	if r := applyAt(t, f, 3, command{Op: opSettle, VIP: "v", Node: "b"}); r != nil {
		t.Fatalf("settle on the assignee: %v", r)
	}
	want := Intent{Drained: []BackendRef{}, Maintenance: []string{},
		VIPs: []VIPAssignment{{VIP: "v", Node: "b", Settled: true}}, Leader: LeaderRecord{Node: "c", Term: 3}}
	if got := f.intent(); !reflect.DeepEqual(got, want) {
		t.Fatalf("intent %+v, want %+v", got, want)
	}
	applyAt(t, f, 3, command{Op: opAssign, VIP: "v"})
	if r := applyAt(t, f, 3, command{Op: opForget, VIP: "v"}); r != nil {
		t.Fatalf("forget of an unassigned VIP: %v", r)
	}
	if got := f.intent().VIPs; len(got) != 0 {
		t.Fatalf("forgotten VIP still there: %+v", got)
	}
}

// A snapshot keeps the assignment and the leader record; one written
// before they existed restores to none; one with an entry Apply could
// never write is refused whole.
func TestAssignmentSurvivesSnapshotAndRestore(t *testing.T) {
	f := newFSM(func() {})
	applyAt(t, f, 5, command{Op: opLead, Node: "a"})
	applyAt(t, f, 5, command{Op: opAssign, VIP: "v1", Node: "b"})
	applyAt(t, f, 5, command{Op: opSettle, VIP: "v1", Node: "b"})
	applyAt(t, f, 5, command{Op: opAssign, VIP: "v0", Node: "c"})
	g := roundTrip(t, f)
	if got, want := g.intent(), f.intent(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	old := newFSM(func() {})
	if err := old.Restore(&closeRecorder{Reader: strings.NewReader(`{"drained":[],"maintenance":["lb-1"]}`)}); err != nil {
		t.Fatalf("snapshot of an older version refused: %v", err)
	}
	if in := old.intent(); len(in.VIPs) != 0 || in.Leader != (LeaderRecord{}) {
		t.Fatalf("older snapshot restored to %+v", in)
	}
	for _, bad := range []string{
		`{"vips":[{"vip":"v","node":"a"},{"vip":"v","node":"b"}]}`,
		`{"vips":[{"vip":"v","settled":true}]}`,
		`{"vips":[{"node":"a"}]}`,
	} {
		before := g.intent()
		if err := g.Restore(&closeRecorder{Reader: strings.NewReader(bad)}); err == nil {
			t.Errorf("snapshot %s restored", bad)
		}
		if !reflect.DeepEqual(g.intent(), before) {
			t.Errorf("refused snapshot %s changed the state", bad)
		}
	}
}

// The assignment is replicated: a follower applies what the leader wrote,
// and a new leader inherits it with the old leader's record, records its
// own term (getting the old record back) and may then change it; the old
// leader, now a follower, can change nothing.
func TestAssignmentIsReplicatedAndInheritedByANewLeader(t *testing.T) {
	c, leader := formedCluster(t)
	if err := leader.AssignVIP("198.18.0.100", "n1"); err == nil {
		t.Fatal("assign before the leader recorded its term accepted")
	}
	prev, err := leader.RecordLeadership()
	if err != nil {
		t.Fatal(err)
	}
	if prev.Node != "" {
		t.Fatalf("first record replaced %+v", prev)
	}
	if err := leader.AssignVIP("198.18.0.100", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := leader.SettleVIP("198.18.0.100", "n1"); err != nil {
		t.Fatal(err)
	}
	if err := leader.AssignVIP("198.18.0.101", "n2"); err != nil {
		t.Fatal(err)
	}
	want := []VIPAssignment{{VIP: "198.18.0.100", Node: "n1", Settled: true}, {VIP: "198.18.0.101", Node: "n2"}}
	term := leader.raft().CurrentTerm()
	for _, tn := range c.up() {
		eventually(t, 5*time.Second, func() error {
			in := tn.Intent()
			if !reflect.DeepEqual(in.VIPs, want) || in.Leader != (LeaderRecord{Node: leader.opts.NodeName, Term: term}) {
				return fmtErr("%s: assignment %+v, record %+v", tn.opts.NodeName, in.VIPs, in.Leader)
			}
			return nil
		})
	}

	if err := leader.TransferLeadership(); err != nil {
		t.Fatal(err)
	}
	next := c.waitLeader(10*time.Second, leader)
	if got := next.Intent().VIPs; !reflect.DeepEqual(got, want) {
		t.Fatalf("new leader inherited %+v, want %+v", got, want)
	}
	if err := next.SettleVIP("198.18.0.101", "n2"); err == nil {
		t.Fatal("the new leader changed the assignment before recording its term")
	}
	var nl *NotLeaderError
	if err := leader.AssignVIP("198.18.0.101", "n0"); !errors.As(err, &nl) {
		t.Fatalf("the old leader's assign: %v, want NotLeaderError", err)
	}
	prev, err = next.RecordLeadership()
	if err != nil {
		t.Fatal(err)
	}
	if prev != (LeaderRecord{Node: leader.opts.NodeName, Term: term}) {
		t.Fatalf("new leader's record replaced %+v, want the old leader's of term %d", prev, term)
	}
	if err := next.SettleVIP("198.18.0.101", "n2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if got := leader.Intent().VIPs; len(got) != 2 || !got[1].Settled {
			return fmtErr("old leader sees %+v", got)
		}
		return nil
	})
}
