package election

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

func TestNewRejectsBadOptions(t *testing.T) {
	good := testOptions(t)
	cases := map[string]func(o *Options){
		"node name":               func(o *Options) { o.NodeName = "" },
		"raft bind":               func(o *Options) { o.RaftBind = "0.0.0.0:7000" },
		"gossip":                  func(o *Options) { o.GossipBind = "nowhere" },
		"secret key":              func(o *Options) { o.SecretKeys = [][]byte{[]byte("short")} },
		"needs a cluster key too": func(o *Options) { o.TLS = &TLSIdentity{} },
		"certificate and key": func(o *Options) {
			o.SecretKeys, o.TLS = [][]byte{keyA}, &TLSIdentity{CertPEM: []byte("not pem")}
		},
		"role":    func(o *Options) { o.Role = "king" },
		`role ""`: func(o *Options) { o.Role = "" },
		// Zero durations: config resolves every one, so a zero is a wiring bug.
		"Timing.Heartbeat": func(o *Options) { o.Timing.Heartbeat = 0 },
		"Timing.Election":  func(o *Options) { o.Timing.Election = 0 },
		"Timing.Lease":     func(o *Options) { o.Timing.Lease = 0 },
		"ReconnectTimeout": func(o *Options) { o.ReconnectTimeout = 0 },
		// hashicorp/raft's own validation still applies.
		"LeaderLeaseTimeout": func(o *Options) {
			o.Timing = Timing{Heartbeat: 50 * time.Millisecond, Election: 50 * time.Millisecond, Lease: 60 * time.Millisecond}
		},
		"metadata": func(o *Options) { o.AdminAddr = strings.Repeat("x", 400) },
		"data dir": func(o *Options) { o.DataDir = "" },
	}
	for want, mod := range cases {
		o := good
		mod(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v", want, err)
		}
	}
	n, err := New(good)
	if err != nil {
		t.Fatal(err)
	}
	if s := n.Status(); s.State != "stopped" || s.Node != "a" {
		t.Fatalf("status before start: %+v", s)
	}
	if err := n.SetDrained("p", "b", true); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("drain before start: %v", err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	if _, open := <-n.Events(); open {
		t.Fatal("events not closed by shutdown")
	}
}

// TestEventQueueNeverHidesALoss pushes bursts faster than the reader reads.
// Whatever is coalesced, the reader sees events that alternate, start by
// changing its last seen state, and end in the last pushed state: after a
// gain it has seen, a loss always comes before the next gain.
func TestEventQueueNeverHidesALoss(t *testing.T) {
	bursts := [][]Event{
		{{Leader: false, Term: 1}},
		{{Leader: false, Term: 1}, {Leader: true, Term: 2}},
		{{Leader: false, Term: 1}, {Leader: true, Term: 2}, {Leader: false, Term: 2}},
		{{Leader: false, Term: 1}, {Leader: true, Term: 2}, {Leader: false, Term: 2}, {Leader: true, Term: 3}},
		{{Leader: false, Term: 1}, {Leader: true, Term: 2}, {Leader: false, Term: 2}, {Leader: true, Term: 3}, {Leader: false, Term: 3}, {Leader: true, Term: 4}},
	}
	for _, burst := range bursts {
		q := newEventQueue(zap.NewNop())
		q.start()
		q.push(Event{Leader: true, Term: 1})
		if e := <-q.out; e != (Event{Leader: true, Term: 1}) {
			t.Fatalf("first event %v", e)
		}
		for _, e := range burst {
			q.push(e)
		}
		q.close()
		got := []Event{{Leader: true, Term: 1}}
		for e := range q.out {
			got = append(got, e)
		}
		for i := 1; i < len(got); i++ {
			if got[i].Leader == got[i-1].Leader {
				t.Errorf("burst %v: got %v: two %v in a row", burst, got, got[i].Leader)
			}
		}
		if len(got) < 2 || got[len(got)-1].Leader != burst[len(burst)-1].Leader {
			t.Errorf("burst %v: got %v: last state lost", burst, got)
		}
	}
}

func TestFSMSnapshotRestoresIntent(t *testing.T) {
	f := newFSM(func() {})
	apply := func(c command) {
		t.Helper()
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if r := f.Apply(&raft.Log{Type: raft.LogCommand, Data: data, Index: 1}); r != nil {
			t.Fatalf("apply %+v: %v", c, r)
		}
	}
	apply(command{Op: opDrain, Pool: "web", Backend: "b2", On: true})
	apply(command{Op: opDrain, Pool: "web", Backend: "b1", On: true})
	apply(command{Op: opMaintenance, Node: "n1", On: true})
	if r := f.Apply(&raft.Log{Type: raft.LogCommand, Data: []byte(`{"op":"launch"}`), Index: 9}); r == nil {
		t.Fatal("unknown command accepted")
	}
	g := roundTrip(t, f)
	want := Intent{Drained: []BackendRef{{"web", "b1"}, {"web", "b2"}}, Maintenance: []string{"n1"}, VIPs: []VIPAssignment{}}
	if got := g.intent(); !sameIntent(got, want) {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	select {
	case in := <-g.changes:
		if !sameIntent(in, want) {
			t.Fatalf("restore published %+v", in)
		}
	default:
		t.Fatal("restore published nothing")
	}
}

func TestNotLeaderErrorMatchesErrNotLeader(t *testing.T) {
	var err error = &NotLeaderError{Leader: "n1", LeaderAdmin: "10.0.0.1:9900"}
	wrapped := errors.Join(errors.New("drain"), err)
	var nl *NotLeaderError
	if !errors.Is(wrapped, ErrNotLeader) || !errors.As(wrapped, &nl) || nl.LeaderAdmin != "10.0.0.1:9900" {
		t.Fatalf("%v does not carry the leader", wrapped)
	}
	if !strings.Contains(err.Error(), "10.0.0.1:9900") {
		t.Fatalf("message %q lacks the admin address", err)
	}
}

func sameIntent(a, b Intent) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }
func (s *memSink) reader() io.ReadCloser {
	return io.NopCloser(bytes.NewReader(s.Bytes()))
}

// testOptions are valid options for one node on free loopback ports.
func testOptions(t *testing.T) Options {
	t.Helper()
	return Options{
		NodeName:         "a",
		RaftBind:         fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		GossipBind:       fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		DataDir:          t.TempDir(),
		BootstrapExpect:  1,
		Role:             RoleVoter,
		Timing:           relaxedTiming,
		ReconnectTimeout: testReconnectTimeout,
	}
}

// TestRaftLeadershipEndsAWindowOnALossItDidNotSee: raft lost and regained
// leadership before the monitor looked. The window of the first stretch must
// end (and withdraw its gain) although raft's latest word is "leader" again.
func TestRaftLeadershipEndsAWindowOnALossItDidNotSee(t *testing.T) {
	var rl raftLeadership
	rl.note(true)
	w := &window{stretch: rl.began}
	if w.endedBy(rl) {
		t.Fatal("the window ended while its stretch goes on")
	}
	ch := make(chan bool, notifyBuffer)
	ch <- false
	ch <- true
	rl.drain(ch)
	if !rl.leader {
		t.Fatal("raft's latest word, leader, was lost")
	}
	if !w.endedBy(rl) {
		t.Fatal("a loss followed by a regain left the first window open: its gain would never be withdrawn")
	}
	rl.note(false)
	if !(&window{stretch: rl.began}).endedBy(rl) {
		t.Fatal("a window survived a plain loss")
	}
}

// TestFitnessNeedsNoFailedVIPHold: a failed VIP hold makes a node unfit on its own
// field, gossip carries it, and metadata of a node from before the field
// (no "vf" key) reads as before: its "l" already folded a failed hold in.
func TestFitnessNeedsNoFailedVIPHold(t *testing.T) {
	fit := Fitness{Pools: 2, HealthyPools: 2, LinkUp: true}
	if !fit.Fit() {
		t.Fatalf("%+v is unfit", fit)
	}
	for what, f := range map[string]Fitness{
		"hold failed":    {Pools: 2, HealthyPools: 2, LinkUp: true, VIPHoldFailed: true},
		"link down":      {Pools: 2, HealthyPools: 2},
		"pool unhealthy": {Pools: 2, HealthyPools: 1, LinkUp: true},
		"zero value":     {},
	} {
		if f.Fit() {
			t.Errorf("%s: %+v is fit", what, f)
		}
	}
	for _, f := range []Fitness{fit, {Pools: 2, HealthyPools: 2, LinkUp: true, VIPHoldFailed: true}} {
		b, err := json.Marshal(meta{Role: RoleVoter, Pools: f.Pools, Healthy: f.HealthyPools, LinkUp: f.LinkUp, VIPHoldFailed: f.VIPHoldFailed})
		if err != nil {
			t.Fatal(err)
		}
		var m meta
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if got := m.fitness(); got != f || m.fit() != f.Fit() {
			t.Errorf("gossiped %+v, read back %+v (fit %v)", f, got, m.fit())
		}
	}
	for old, want := range map[string]bool{
		`{"r":"127.0.0.1:7000","o":"voter","p":1,"h":1,"l":true,"s":1}`:  true,
		`{"r":"127.0.0.1:7000","o":"voter","p":1,"h":1,"l":false,"s":1}`: false, // link down or hold failed
	} {
		var m meta
		if err := json.Unmarshal([]byte(old), &m); err != nil {
			t.Fatal(err)
		}
		if m.fit() != want {
			t.Errorf("older node's metadata %s: fit %v, want %v", old, m.fit(), want)
		}
	}
}
