package election

import (
	"bytes"
	"cmp"
	"encoding/json"
	"io"
	"reflect"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

// fuzzTerm is the Raft term of every entry the fuzzers apply: the term of
// the preloaded leader record, so assignment commands can be accepted.
const fuzzTerm = 3

// fuzzFSM is an fsm that already holds some intent, so that "unchanged"
// means something, and counts what it publishes.
func fuzzFSM(t *testing.T) (*fsm, *int) {
	t.Helper()
	published := new(int)
	f := newFSM(func() { *published++ })
	for _, c := range []command{
		{Op: opDrain, Pool: "web", Backend: "198.18.0.21:9000", On: true},
		{Op: opMaintenance, Node: "lb-2", On: true},
		{Op: opLead, Node: "lb-1"},
		{Op: opAssign, VIP: "198.18.0.100", Node: "lb-2"},
		{Op: opSettle, VIP: "198.18.0.100", Node: "lb-2"},
		{Op: opAssign, VIP: "198.18.0.101", Node: "lb-3"},
	} {
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if r := f.Apply(&raft.Log{Type: raft.LogCommand, Data: data, Index: 1, Term: fuzzTerm}); r != nil && c.Op != opLead {
			t.Fatalf("preload %+v: %v", c, r)
		}
	}
	<-f.changes
	*published = 0
	return f, published
}

// FuzzFSMApply applies arbitrary log entries, as a newer, buggy or hostile
// leader could write them. Apply never panics; an entry it refuses returns
// an error and changes nothing; an entry it accepts has exactly its effect.
func FuzzFSMApply(f *testing.F) {
	for _, c := range []command{
		{Op: opDrain, Pool: "web", Backend: "198.18.0.22:9000", On: true},
		{Op: opDrain, Pool: "web", Backend: "198.18.0.21:9000", On: false},
		{Op: opMaintenance, Node: "lb-1", On: true},
		{Op: opMaintenance, Node: "lb-2", On: false},
		{Op: opLead, Node: "lb-2"},
		{Op: opAssign, VIP: "198.18.0.101", Node: "lb-1"},
		{Op: opAssign, VIP: "198.18.0.100", Node: ""},
		{Op: opSettle, VIP: "198.18.0.101", Node: "lb-3"},
		{Op: opSettle, VIP: "198.18.0.101", Node: "lb-1"},
		{Op: opForget, VIP: "198.18.0.100"},
		{Op: opForget, VIP: "198.18.0.102"},
	} {
		data, _ := json.Marshal(c)
		f.Add(uint8(raft.LogCommand), data)
	}
	f.Add(uint8(raft.LogCommand), []byte(`{"op":"launch"}`))
	f.Add(uint8(raft.LogCommand), []byte(`{"op":"drain","on":"yes"}`))
	f.Add(uint8(raft.LogNoop), []byte(`{"op":"drain","pool":"web","backend":"x","on":true}`))
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		fsm, published := fuzzFSM(t)
		before := fsm.intent()
		res := fsm.Apply(&raft.Log{Type: raft.LogType(typ), Data: data, Index: 7, Term: fuzzTerm})
		after := fsm.intent()
		var want Intent
		_, isRecord := res.(LeaderRecord)
		switch err, isErr := res.(error); {
		case res != nil && !isErr && !isRecord:
			t.Fatalf("Apply returned %T %v: want nil or an error", res, res)
		case raft.LogType(typ) != raft.LogCommand:
			if res != nil {
				t.Fatalf("Apply of a %s entry: %v", raft.LogType(typ), res)
			}
			want = before
		case isErr:
			if *published != 0 || !reflect.DeepEqual(after, before) {
				t.Fatalf("refused entry (%v) changed the state: %+v -> %+v, %d published", err, before, after, *published)
			}
			return
		default:
			var c command
			if err := json.Unmarshal(data, &c); err != nil {
				t.Fatalf("Apply accepted %q, which is no command: %v", data, err)
			}
			want = applyToModel(t, before, c)
		}
		if !reflect.DeepEqual(after, want) {
			t.Fatalf("Apply %q: state %+v, want %+v", data, after, want)
		}
		if raft.LogType(typ) == raft.LogCommand && *published != 1 {
			t.Fatalf("Apply %q published %d times, want 1", data, *published)
		}
	})
}

// applyToModel is what an accepted command must do to an Intent.
func applyToModel(t *testing.T, in Intent, c command) Intent {
	t.Helper()
	out := Intent{Drained: slices.Clone(in.Drained), Maintenance: slices.Clone(in.Maintenance), VIPs: slices.Clone(in.VIPs), Leader: in.Leader}
	at := slices.IndexFunc(out.VIPs, func(a VIPAssignment) bool { return a.VIP == c.VIP })
	switch c.Op {
	case opLead:
		out.Leader = LeaderRecord{Node: c.Node, Term: fuzzTerm}
	case opAssign:
		out.VIPs = slices.DeleteFunc(out.VIPs, func(a VIPAssignment) bool { return a.VIP == c.VIP })
		out.VIPs = append(out.VIPs, VIPAssignment{VIP: c.VIP, Node: c.Node})
	case opSettle:
		if at < 0 || out.VIPs[at].Node != c.Node || c.Node == "" {
			t.Fatalf("Apply accepted %+v on %+v", c, in.VIPs)
		}
		out.VIPs[at].Settled = true
	case opForget:
		if at >= 0 && out.VIPs[at].Node != "" {
			t.Fatalf("Apply forgot an assigned VIP: %+v on %+v", c, in.VIPs)
		}
		out.VIPs = slices.DeleteFunc(out.VIPs, func(a VIPAssignment) bool { return a.VIP == c.VIP })
	case opDrain:
		ref := BackendRef{Pool: c.Pool, Backend: c.Backend}
		out.Drained = slices.DeleteFunc(out.Drained, func(r BackendRef) bool { return r == ref })
		if c.On {
			out.Drained = append(out.Drained, ref)
		}
	case opMaintenance:
		out.Maintenance = slices.DeleteFunc(out.Maintenance, func(n string) bool { return n == c.Node })
		if c.On {
			out.Maintenance = append(out.Maintenance, c.Node)
		}
	default:
		t.Fatalf("Apply accepted unknown op %q", c.Op)
	}
	slices.SortFunc(out.Drained, compareRefs)
	slices.Sort(out.Maintenance)
	slices.SortFunc(out.VIPs, func(a, b VIPAssignment) int { return cmp.Compare(a.VIP, b.VIP) })
	if c.Op != opLead && c.Op != opDrain && c.Op != opMaintenance && (c.VIP == "" || in.Leader.Term != fuzzTerm) {
		t.Fatalf("Apply accepted %+v outside the recorded term or without a VIP", c)
	}
	return out
}

func compareRefs(a, b BackendRef) int {
	return cmp.Or(cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Backend, b.Backend))
}

// FuzzFSMRestore restores arbitrary snapshots. Restore never panics and
// always closes the snapshot; one it refuses changes nothing; one it
// accepts leaves a sorted, duplicate-free state that survives its own
// snapshot and restore unchanged.
func FuzzFSMRestore(f *testing.F) {
	snap := intentSnapshot(Intent{
		Drained:     []BackendRef{{"web", "198.18.0.21:9000"}, {"web", "198.18.0.22:9000"}},
		Maintenance: []string{"lb-1"},
		VIPs:        []VIPAssignment{{VIP: "198.18.0.100", Node: "lb-2", Settled: true}, {VIP: "198.18.0.101"}},
		Leader:      LeaderRecord{Node: "lb-1", Term: 4},
	})
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		f.Fatal(err)
	}
	f.Add(sink.Bytes())
	f.Add([]byte(`{"drained":[{"pool":"a","backend":"b"},{"pool":"a","backend":"b"}],"maintenance":["z","a","z"]}`))
	f.Add([]byte(`{"drained":[{"pool":1}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"vips":[{"vip":"a","node":"n"},{"vip":"a","node":"m"}]}`))
	f.Add([]byte(`{"vips":[{"vip":"a","settled":true}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm, published := fuzzFSM(t)
		before := fsm.intent()
		rc := &closeRecorder{Reader: bytes.NewReader(data)}
		err := fsm.Restore(rc)
		if !rc.closed {
			t.Fatal("Restore left the snapshot open")
		}
		after := fsm.intent()
		if err != nil {
			if *published != 0 || !reflect.DeepEqual(after, before) {
				t.Fatalf("refused snapshot (%v) changed the state: %+v -> %+v", err, before, after)
			}
			return
		}
		if *published != 1 {
			t.Fatalf("Restore published %d times, want 1", *published)
		}
		if !slices.IsSortedFunc(after.Drained, compareRefs) || !slices.IsSorted(after.Maintenance) ||
			len(slices.Compact(slices.Clone(after.Drained))) != len(after.Drained) ||
			len(slices.Compact(slices.Clone(after.Maintenance))) != len(after.Maintenance) ||
			!slices.IsSortedFunc(after.VIPs, func(a, b VIPAssignment) int { return cmp.Compare(a.VIP, b.VIP) }) ||
			len(slices.CompactFunc(slices.Clone(after.VIPs), func(a, b VIPAssignment) bool { return a.VIP == b.VIP })) != len(after.VIPs) {
			t.Fatalf("restored state not sorted and unique: %+v", after)
		}
		again, _ := fsm.Snapshot()
		sink := &memSink{}
		if err := again.Persist(sink); err != nil {
			t.Fatal(err)
		}
		g := newFSM(func() {})
		if err := g.Restore(sink.reader()); err != nil {
			t.Fatalf("own snapshot %q refused: %v", sink.Bytes(), err)
		}
		if got := g.intent(); !reflect.DeepEqual(got, after) {
			t.Fatalf("snapshot round trip: %+v, want %+v", got, after)
		}
	})
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }
