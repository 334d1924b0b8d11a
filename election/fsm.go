package election

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/hashicorp/raft"
)

// BackendRef names one backend of one pool.
type BackendRef struct {
	Pool    string `json:"pool"`
	Backend string `json:"backend"`
}

// Intent is the replicated intent: drained backends and nodes in
// maintenance (the operator's), and the spread VIP assignment with the
// leader record it is written under (the leader's, docs/architecture.md
// "Spread VIPs: leases"). Slices are sorted.
type Intent struct {
	Drained     []BackendRef    `json:"drained"`
	Maintenance []string        `json:"maintenance"`
	VIPs        []VIPAssignment `json:"vips"`
	Leader      LeaderRecord    `json:"leader"`
}

// command is one replicated change, JSON encoded in the Raft log.
type command struct {
	Op      string `json:"op"` // opDrain | opMaintenance | opLead | opAssign | opSettle | opForget
	Pool    string `json:"pool,omitempty"`
	Backend string `json:"backend,omitempty"`
	Node    string `json:"node,omitempty"`
	VIP     string `json:"vip,omitempty"`
	On      bool   `json:"on"`
}

const (
	opDrain       = "drain"
	opMaintenance = "maintenance"
)

// fsm is the Raft state machine holding the Intent. Raft calls Apply,
// Snapshot and Restore from its own goroutines; readers use intent().
type fsm struct {
	changes  chan Intent // latest value, buffered 1
	onChange func()      // called after every change, outside the lock

	mu          sync.Mutex
	drained     map[BackendRef]struct{}
	maintenance map[string]struct{}
	assignment  map[string]holding // spread VIP -> its assignee
	leader      LeaderRecord
}

var _ raft.FSM = (*fsm)(nil)

func newFSM(onChange func()) *fsm {
	return &fsm{
		changes:     make(chan Intent, 1),
		onChange:    onChange,
		drained:     map[BackendRef]struct{}{},
		maintenance: map[string]struct{}{},
		assignment:  map[string]holding{},
	}
}

// Apply applies one committed command. Unknown commands are an error value
// returned to the proposer, never a panic: a newer node may write them.
func (f *fsm) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return nil
	}
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("decode command at index %d: %w", l.Index, err)
	}
	f.mu.Lock()
	var res interface{}
	switch c.Op {
	case opLead, opAssign, opSettle, opForget:
		var err error
		if res, err = f.applyAssignmentLocked(c, l.Term); err != nil {
			f.mu.Unlock()
			return fmt.Errorf("%s at index %d: %w", c.Op, l.Index, err)
		}
	case opDrain:
		ref := BackendRef{Pool: c.Pool, Backend: c.Backend}
		if c.On {
			f.drained[ref] = struct{}{}
		} else {
			delete(f.drained, ref)
		}
	case opMaintenance:
		if c.On {
			f.maintenance[c.Node] = struct{}{}
		} else {
			delete(f.maintenance, c.Node)
		}
	default:
		f.mu.Unlock()
		return fmt.Errorf("unknown command %q at index %d", c.Op, l.Index)
	}
	in := f.intentLocked()
	f.mu.Unlock()
	f.publish(in)
	return res
}

// publish replaces any unread value in changes with in.
func (f *fsm) publish(in Intent) {
	f.onChange()
	for {
		select {
		case f.changes <- in:
			return
		default:
		}
		select {
		case <-f.changes:
		default:
		}
	}
}

func (f *fsm) intent() Intent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.intentLocked()
}

func (f *fsm) inMaintenance(node string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.maintenance[node]
	return ok
}

func (f *fsm) intentLocked() Intent {
	in := Intent{Drained: []BackendRef{}, Maintenance: []string{}}
	for r := range f.drained {
		in.Drained = append(in.Drained, r)
	}
	for n := range f.maintenance {
		in.Maintenance = append(in.Maintenance, n)
	}
	sort.Slice(in.Drained, func(i, j int) bool {
		a, b := in.Drained[i], in.Drained[j]
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		return a.Backend < b.Backend
	})
	sort.Strings(in.Maintenance)
	in.VIPs = f.assignmentLocked()
	in.Leader = f.leader
	return in
}

// Snapshot captures the intent; it is small, so a copy is taken at once.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return intentSnapshot(f.intent()), nil
}

// Restore replaces the state with a snapshot written by Persist.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var in Intent
	if err := json.NewDecoder(rc).Decode(&in); err != nil {
		return fmt.Errorf("decode intent snapshot: %w", err)
	}
	assignment, err := restoreAssignment(in.VIPs)
	if err != nil {
		return fmt.Errorf("decode intent snapshot: %w", err)
	}
	f.mu.Lock()
	f.drained = map[BackendRef]struct{}{}
	f.maintenance = map[string]struct{}{}
	f.assignment = assignment
	f.leader = in.Leader
	for _, r := range in.Drained {
		f.drained[r] = struct{}{}
	}
	for _, n := range in.Maintenance {
		f.maintenance[n] = struct{}{}
	}
	in = f.intentLocked()
	f.mu.Unlock()
	f.publish(in)
	return nil
}

type intentSnapshot Intent

func (s intentSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(Intent(s)); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("write intent snapshot: %w", err)
	}
	return sink.Close()
}

func (intentSnapshot) Release() {}
