package election

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

func TestTimingProfilesKeepLeaseBelowHeartbeat(t *testing.T) {
	for _, name := range []string{"lan", "wan"} {
		tm, err := TimingProfile(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := tm.Validate(); err != nil {
			t.Fatalf("%s %+v: %v", name, tm, err)
		}
	}
	if _, err := TimingProfile("moon"); err == nil {
		t.Fatal("unknown profile accepted")
	}
	bad := map[string]Timing{
		"lease":     {Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, Lease: 100 * time.Millisecond},
		"election":  {Heartbeat: 200 * time.Millisecond, Election: 100 * time.Millisecond, Lease: 50 * time.Millisecond},
		"heartbeat": {Heartbeat: time.Millisecond, Election: 100 * time.Millisecond, Lease: time.Millisecond},
	}
	for want, tm := range bad {
		if err := tm.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: error %v, want one naming %s", tm, err, want)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	good := Options{NodeName: "a", RaftBind: "127.0.0.1:7000", GossipBind: "127.0.0.1:7001", DataDir: t.TempDir()}
	cases := map[string]func(o *Options){
		"node name":               func(o *Options) { o.NodeName = "" },
		"raft bind":               func(o *Options) { o.RaftBind = "0.0.0.0:7000" },
		"gossip":                  func(o *Options) { o.GossipBind = "nowhere" },
		"secret key":              func(o *Options) { o.SecretKeys = [][]byte{[]byte("short")} },
		"needs a cluster key too": func(o *Options) { o.TLS = &TLSIdentity{} },
		"certificate and key": func(o *Options) {
			o.SecretKeys, o.TLS = [][]byte{keyA}, &TLSIdentity{CertPEM: []byte("not pem")}
		},
		"role": func(o *Options) { o.Role = "king" },
		"lease": func(o *Options) {
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
		{{false, 1}},
		{{false, 1}, {true, 2}},
		{{false, 1}, {true, 2}, {false, 2}},
		{{false, 1}, {true, 2}, {false, 2}, {true, 3}},
		{{false, 1}, {true, 2}, {false, 2}, {true, 3}, {false, 3}, {true, 4}},
	}
	for _, burst := range bursts {
		q := newEventQueue(zap.NewNop())
		q.push(Event{true, 1})
		if e := <-q.out; e != (Event{true, 1}) {
			t.Fatalf("first event %v", e)
		}
		for _, e := range burst {
			q.push(e)
		}
		q.close()
		got := []Event{{true, 1}}
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
	want := Intent{Drained: []BackendRef{{"web", "b1"}, {"web", "b2"}}, Maintenance: []string{"n1"}}
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
