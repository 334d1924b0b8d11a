package spread

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/lease"
	"github.com/vipd/vipd/placement"
)

// Test timing: short enough for quick tests, long enough that the shared
// machine's stalls do not end leases that should live. Nothing asserts a
// duration; every wait is for a state, with a deadline.
var testTiming = lease.Timing{Duration: 600 * time.Millisecond, Renew: 50 * time.Millisecond, Margin: 60 * time.Millisecond, Drift: lease.DefaultDrift}

// longTiming's lease outlasts every test: a VIP that moves under it moved
// because the rules let it move at once (a release, a leader's own VIP),
// never because a lease ran out.
var longTiming = lease.Timing{Duration: time.Hour, Renew: 50 * time.Millisecond, Margin: 60 * time.Millisecond, Drift: lease.DefaultDrift}

const deadline = 10 * time.Second

// dialHang is how long a dial to a hung node blocks: several leases of
// testTiming.
const dialHang = 3 * time.Second

// world is a fake cluster shared by the test's nodes: one replicated
// assignment applied at once everywhere, a leader, lease connections as
// pipes that a cut breaks, and the holds of every node, which must never
// give a VIP two holders.
type world struct {
	t      *testing.T
	timing lease.Timing

	mu         sync.Mutex
	leader     string
	term       uint64
	record     election.LeaderRecord
	assignment map[string]election.VIPAssignment
	runners    map[string]*Runner
	cut        map[string]bool
	hang       map[string]bool            // dials to these nodes block for dialHang
	dead       map[string]bool            // gossip's word, whatever the lease connections say
	rebalance  string                     // cluster.rebalance of every node added from then on (default manual)
	rounds     int                        // rounds committed
	writes     int                        // messages holders wrote to a lease connection
	frozen     map[string]election.Intent // what a cut node last saw of the log
	conns      map[string][]net.Conn
	holders    map[string]map[string]bool // VIP -> nodes holding it
	overlaps   []string
}

func newWorld(t *testing.T, timing lease.Timing) *world {
	return &world{t: t, timing: timing, assignment: map[string]election.VIPAssignment{}, runners: map[string]*Runner{},
		cut: map[string]bool{}, hang: map[string]bool{}, dead: map[string]bool{}, frozen: map[string]election.Intent{}, conns: map[string][]net.Conn{}, holders: map[string]map[string]bool{}}
}

type fakeCluster struct {
	w    *world
	node string
}

func (c fakeCluster) lead() error {
	if c.w.leader != c.node {
		return election.ErrNotLeader
	}
	return nil
}

func (c fakeCluster) RecordLeadership() (election.LeaderRecord, error) {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if err := c.lead(); err != nil {
		return election.LeaderRecord{}, err
	}
	prev := c.w.record
	c.w.record = election.LeaderRecord{Node: c.node, Term: c.w.term}
	return prev, nil
}

func (c fakeCluster) change(f func() error) error {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if err := c.lead(); err != nil {
		return err
	}
	if c.w.record.Node != c.node || c.w.record.Term != c.w.term {
		return errors.New("assignment change outside the recorded term")
	}
	return f()
}

func (c fakeCluster) AssignVIP(vip, node string) error {
	return c.change(func() error {
		c.w.assignment[vip] = election.VIPAssignment{VIP: vip, Node: node}
		return nil
	})
}

func (c fakeCluster) SettleVIP(vip, node string) error {
	return c.change(func() error {
		if a := c.w.assignment[vip]; a.Node != node || node == "" {
			return fmt.Errorf("settle %s on %s: assigned to %q", vip, node, a.Node)
		}
		c.w.assignment[vip] = election.VIPAssignment{VIP: vip, Node: node, Settled: true}
		return nil
	})
}

func (c fakeCluster) ForgetVIP(vip string) error {
	return c.change(func() error { delete(c.w.assignment, vip); return nil })
}

func (c fakeCluster) Round(term uint64) error {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if err := c.lead(); err != nil || c.w.term != term {
		return fmt.Errorf("round in term %d: %v", term, err)
	}
	c.w.rounds++
	return nil
}

func (c fakeCluster) Intent() election.Intent {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if in, cut := c.w.frozen[c.node]; cut {
		return in
	}
	return c.w.intentLocked()
}

func (w *world) intentLocked() election.Intent {
	in := election.Intent{Leader: w.record}
	for _, a := range w.assignment {
		in.VIPs = append(in.VIPs, a)
	}
	sort.Slice(in.VIPs, func(i, j int) bool { return in.VIPs[i].VIP < in.VIPs[j].VIP })
	return in
}

func (c fakeCluster) Status() election.Status {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	st := election.Status{Node: c.node, Leader: c.w.leader, Term: c.w.term}
	for name := range c.w.runners {
		st.Members = append(st.Members, election.Member{Name: name, RaftAddr: name, Voter: true, Alive: !c.w.dead[name], LinkUp: true, Role: "voter", Fit: true})
	}
	return st
}

func (c fakeCluster) DialLease(ctx context.Context, raftAddr string) (net.Conn, error) {
	c.w.mu.Lock()
	if c.w.hang[raftAddr] {
		// A dead host's SYN goes unanswered: the dial blocks for its
		// whole timeout, whatever ctx says (raft's StreamLayer.Dial takes
		// a timeout, not a context).
		c.w.mu.Unlock()
		time.Sleep(dialHang)
		return nil, fmt.Errorf("dial %s: i/o timeout", raftAddr)
	}
	defer c.w.mu.Unlock()
	srv := c.w.runners[raftAddr]
	if c.w.cut[c.node] || c.w.cut[raftAddr] || srv == nil {
		return nil, fmt.Errorf("dial %s: unreachable", raftAddr)
	}
	a, b := net.Pipe()
	a = countingConn{Conn: a, w: c.w}
	c.w.conns[c.node] = append(c.w.conns[c.node], a)
	c.w.conns[raftAddr] = append(c.w.conns[raftAddr], b)
	go func() { defer b.Close(); srv.ServeConn(b) }()
	return a, nil
}

// countingConn counts the messages a holder writes (one Write each:
// lease.WriteMessage).
type countingConn struct {
	net.Conn
	w *world
}

func (c countingConn) Write(p []byte) (int, error) {
	c.w.mu.Lock()
	c.w.writes++
	c.w.mu.Unlock()
	return c.Conn.Write(p)
}

// setCut cuts node off (or heals it): its lease connections break, no new
// one opens and it sees no more of the log, as an nftables drop with the
// link up.
func (w *world) setCut(node string, cut bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cut[node] = cut
	delete(w.frozen, node)
	if cut {
		w.frozen[node] = w.intentLocked()
		for _, c := range w.conns[node] {
			c.Close()
		}
		w.conns[node] = nil
	}
}

func (w *world) setLeader(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.leader = node
	w.term++
}

// holds is one node's Holds: it records into the world and notes any VIP
// that would have two holders.
type holds struct {
	w    *world
	node string
}

func (h holds) Hold(vip string) {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	if h.w.holders[vip] == nil {
		h.w.holders[vip] = map[string]bool{}
	}
	for other := range h.w.holders[vip] {
		h.w.overlaps = append(h.w.overlaps, fmt.Sprintf("%s claimed %s, which %s holds", h.node, vip, other))
	}
	h.w.holders[vip][h.node] = true
}

func (h holds) Release(vip string) {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	delete(h.w.holders[vip], h.node)
}

func (w *world) holderOf(vip string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for n := range w.holders[vip] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (w *world) noOverlap() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range w.overlaps {
		w.t.Error(o)
	}
}

// testNode is a Runner of the world, with its leadership events.
type testNode struct {
	name       string
	r          *Runner
	leadership chan Leadership
	cancel     context.CancelFunc
	done       chan struct{}
}

var testVIPs = []placement.VIP{
	{Address: "198.18.0.100", Placement: placement.Spread, Frontends: []string{"web"}},
	{Address: "198.18.0.101", Placement: placement.Spread, Frontends: []string{"web"}},
}

func (w *world) add(name string, vips []placement.VIP, healthy []string) *testNode {
	return w.addWith(name, func() []placement.VIP { return vips }, healthy)
}

// addWith is add with the node's config read from vips on every look, so
// a test can change it as a reload would.
func (w *world) addWith(name string, vips func() []placement.VIP, healthy []string) *testNode {
	r, err := New(Options{
		Node: name, Timing: w.timing, Cluster: fakeCluster{w: w, node: name}, Holds: holds{w: w, node: name},
		VIPs: vips, Rebalance: func() string { return cmp.Or(w.rebalance, placement.Manual) },
		Healthy: func() []string { return healthy }, Logger: zaptest.NewLogger(w.t).Named(name),
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	w.runners[name] = r
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{name: name, r: r, leadership: make(chan Leadership, 4), cancel: cancel, done: make(chan struct{})}
	go func() { defer close(n.done); r.Run(ctx, n.leadership) }()
	w.t.Cleanup(func() { n.stop(w.t) })
	return n
}

func (n *testNode) stop(t *testing.T) {
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(deadline):
		t.Fatalf("%s: Run did not return", n.name)
	}
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !f() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// spreadOver waits until each VIP has exactly one holder and the holders
// are the given number of distinct nodes, and returns VIP -> holder.
func (w *world) spreadOver(t *testing.T, nodes int) map[string]string {
	t.Helper()
	got := map[string]string{}
	eventually(t, fmt.Sprintf("the VIPs spread over %d nodes", nodes), func() bool {
		clear(got)
		distinct := map[string]bool{}
		for _, v := range testVIPs {
			h := w.holderOf(v.Address)
			if len(h) != 1 {
				return false
			}
			got[v.Address] = h[0]
			distinct[h[0]] = true
		}
		return len(distinct) == nodes
	})
	return got
}

func startTwo(t *testing.T, timing lease.Timing) (*world, *testNode, *testNode) {
	w := newWorld(t, timing)
	a := w.add("a", testVIPs, []string{"web"})
	b := w.add("b", testVIPs, []string{"web"})
	w.setLeader("a")
	a.leadership <- Leadership{Leader: true, Term: 1}
	t.Cleanup(w.noOverlap)
	return w, a, b
}

func other(vips map[string]string, node string) string {
	for v, n := range vips {
		if n == node {
			return v
		}
	}
	return ""
}

// The leader places one VIP on itself and one on the follower, which holds
// its own under a lease.
func TestVIPsSpreadOverTheLeaderAndAFollower(t *testing.T) {
	w, _, b := startTwo(t, testTiming)
	got := w.spreadOver(t, 2)
	if !b.r.Held(other(got, "b")) {
		t.Errorf("the follower's Held does not say it holds %s", other(got, "b"))
	}
}

// A follower cut off with its link up drops its VIP when its lease ends,
// before the leader gives it to another node (the world fails on a sample
// with two holders), and the VIP then moves to the leader.
func TestCutFollowerDropsItsVIPBeforeItMoves(t *testing.T) {
	w, _, _ := startTwo(t, testTiming)
	got := w.spreadOver(t, 2)
	vip := other(got, "b")
	w.setCut("b", true)
	eventually(t, "the cut follower's VIP to move to the leader", func() bool {
		return slices.Equal(w.holderOf(vip), []string{"a"})
	})
}

// A planned move hands a VIP over both ways without waiting for a lease:
// the leader releases its own first and the follower is granted it; the
// follower, told in an answer, releases and the leader takes it back.
func TestMoveHandsAVIPOver(t *testing.T) {
	w, a, _ := startTwo(t, longTiming)
	got := w.spreadOver(t, 2)
	vip := other(got, "a")
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := a.r.Move(ctx, vip, "b"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the moved VIP on the follower", func() bool { return slices.Equal(w.holderOf(vip), []string{"b"}) })
	if err := a.r.Move(ctx, vip, "a"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the VIP moved back to the leader", func() bool { return slices.Equal(w.holderOf(vip), []string{"a"}) })
	if err := a.r.Move(ctx, "198.18.0.199", "b"); !errors.Is(err, ErrNoSuchVIP) {
		t.Errorf("move of an unknown VIP: %v, want ErrNoSuchVIP", err)
	}
	if err := a.r.Move(ctx, vip, "nobody"); !errors.Is(err, ErrIneligible) {
		t.Errorf("move to a non-member: %v, want ErrIneligible", err)
	}
}

// A follower that hands over (SIGTERM) releases its VIP and the leader
// takes it at once, without waiting for the lease.
func TestFollowerHandOverFreesItsVIPAtOnce(t *testing.T) {
	w, _, b := startTwo(t, longTiming)
	got := w.spreadOver(t, 2)
	vip := other(got, "b")
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := b.r.HandOver(ctx); err != nil {
		t.Fatal(err)
	}
	if h := w.holderOf(vip); slices.Contains(h, "b") {
		t.Fatalf("after its hand-over the follower still holds %s", vip)
	}
	// Under longTiming only the release can free it.
	eventually(t, "the handed-over VIP on the leader", func() bool { return slices.Equal(w.holderOf(vip), []string{"a"}) })
}

// A leader that loses leadership releases what it holds as leader first;
// a new leader keeps the follower's VIP where it is and places the old
// leader's.
func TestNewLeaderRenewsFollowersAndPlacesTheOldLeadersVIP(t *testing.T) {
	w := newWorld(t, longTiming)
	t.Cleanup(w.noOverlap)
	a := w.add("a", testVIPs, []string{"web"})
	b := w.add("b", testVIPs, []string{"web"})
	c := w.add("c", testVIPs, []string{"web"})
	w.setLeader("a")
	a.leadership <- Leadership{Leader: true, Term: 1}
	got := w.spreadOver(t, 2)
	follower := ""
	for _, n := range got {
		if n != "a" {
			follower = n
		}
	}
	w.setCut("a", true)
	a.leadership <- Leadership{Leader: false, Term: 1}
	eventually(t, "the old leader to release", func() bool { return !slices.Contains(w.holderOf(other(got, "a")), "a") })
	next := b
	if follower == "b" {
		next = c
	}
	w.setLeader(next.name)
	next.leadership <- Leadership{Leader: true, Term: 2}
	after := w.spreadOver(t, 2)
	if after[other(got, follower)] != follower {
		t.Errorf("the follower's VIP moved on a change of leader: %v -> %v", got, after)
	}
}

// A VIP moved away from a follower that is cut off goes to its new node
// only once the follower's lease has surely ended (lease.Granter.MayGive):
// the follower cannot hear that it lost it.
func TestMoveAwayFromACutFollowerWaitsForItsLease(t *testing.T) {
	w, a, _ := startTwo(t, testTiming)
	got := w.spreadOver(t, 2)
	vip := other(got, "b")
	w.setCut("b", true)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := a.r.Move(ctx, vip, "a"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the VIP on the leader", func() bool { return slices.Equal(w.holderOf(vip), []string{"a"}) })
}

// Gossip that says a follower is dead while its renewals keep reaching
// the leader (a healed node's stale rumour, before the follower refutes
// it) moves nothing: the renewal is newer evidence than the rumour.
func TestRenewingFollowerKeepsItsVIPWhenGossipSaysItIsDead(t *testing.T) {
	w, _, b := startTwo(t, longTiming)
	got := w.spreadOver(t, 2)
	vip := other(got, "b")
	w.mu.Lock()
	w.dead["b"] = true
	from := w.rounds
	w.mu.Unlock()
	eventually(t, "ten rounds answered after gossip called the follower dead", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.rounds >= from+10
	})
	if h := w.holderOf(vip); !slices.Equal(h, []string{"b"}) || !b.r.Held(vip) {
		t.Errorf("%s on %v after gossip called its renewing holder b dead, want it left on b", vip, h)
	}
}

// A leader that steps down while alive (Raft's quorum check failing under
// load) keeps its VIP under the new leader: it dropped the VIP on the loss
// and asks for it again soon after the new leader refused its first
// request (sent before the granter loop ran), within the grace the new
// leader gives the previous leader's node. Without the grace
// the new leader moved it at once, and the cluster was left with two VIPs
// on one node (make bench-spread, SIGTERM trial 8).
func TestLeaderThatStepsDownAliveKeepsItsVIP(t *testing.T) {
	// The grace is one renewal period: long here, so that the old
	// leader's request comes well inside it however loaded the machine.
	w := newWorld(t, lease.Timing{Duration: time.Hour, Renew: 2 * time.Second, Margin: 60 * time.Millisecond, Drift: lease.DefaultDrift})
	t.Cleanup(w.noOverlap)
	a := w.add("a", testVIPs, []string{"web"})
	b := w.add("b", testVIPs, []string{"web"})
	w.add("c", testVIPs, []string{"web"})
	w.setLeader("a")
	a.leadership <- Leadership{Leader: true, Term: 1}
	got := w.spreadOver(t, 2)
	vip := other(got, "a")
	w.setLeader("b")
	a.leadership <- Leadership{Leader: false, Term: 1}
	eventually(t, "the old leader to release its VIP", func() bool { return len(w.holderOf(vip)) == 0 })
	b.leadership <- Leadership{Leader: true, Term: 2}
	eventually(t, "the new leader's record", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.record.Node == "b"
	})
	eventually(t, vip+" held again", func() bool { return len(w.holderOf(vip)) == 1 })
	if h := w.holderOf(vip); !slices.Equal(h, []string{"a"}) {
		t.Errorf("%s on %v after its leader a stepped down alive, want it back on a", vip, h)
	}
}

// Holders answered by one round ask again together (a renewal period after
// the answer), and the leader holds a request back for up to Gather so
// that the others' requests share its round: in the steady state one Raft
// entry a renewal period answers every holder, instead of one per request.
// Gather is a tenth of the period here, as derived: holders that asked on
// their own cadence would rarely fall inside it.
func TestRenewalsShareOneRound(t *testing.T) {
	w := newWorld(t, lease.Timing{Duration: time.Hour, Renew: 100 * time.Millisecond, Margin: 60 * time.Millisecond,
		Gather: 10 * time.Millisecond, Drift: lease.DefaultDrift})
	w.rebalance = placement.Auto // the nodes join one by one
	t.Cleanup(w.noOverlap)
	a := w.add("a", testVIPs, []string{"web"})
	w.setLeader("a")
	a.leadership <- Leadership{Leader: true, Term: 1}
	// The holders start a third of a renewal period apart, so that their
	// first answers come from different rounds: the granter's cadence
	// must bring them into step (granter.roundDue).
	time.Sleep(w.timing.Renew / 3)
	w.add("b", testVIPs, []string{"web"})
	time.Sleep(w.timing.Renew / 3)
	w.add("c", testVIPs, []string{"web"})
	w.spreadOver(t, 2)
	// The holders fall into step: G/2 closer a period (granter.roundDue),
	// so within 2(R+G)/G periods of R+G.
	period := w.timing.Renew + w.timing.Gather
	time.Sleep(2 * period * period / w.timing.Gather)
	w.mu.Lock()
	rounds, writes := w.rounds, w.writes
	w.mu.Unlock()
	eventually(t, "100 more renewal requests", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.writes >= writes+100
	})
	w.mu.Lock()
	rounds, writes = w.rounds-rounds, w.writes-writes
	w.mu.Unlock()
	t.Logf("%d rounds answered %d requests", rounds, writes)
	if 3*rounds > 2*writes {
		t.Errorf("%d rounds for %d requests from two or three holders: they do not share rounds", rounds, writes)
	}
}

// A node that joins a cluster whose spread is uneven by more than one gets
// a VIP with rebalance: auto, by planned hand-over, and nothing with
// manual (placement is sticky).
func TestAutoRebalanceMovesAVIPToAJoiningNode(t *testing.T) {
	three := append(slices.Clone(testVIPs), placement.VIP{Address: "198.18.0.102", Placement: placement.Spread, Frontends: []string{"web"}})
	for _, rebalance := range []string{placement.Manual, placement.Auto} {
		t.Run(rebalance, func(t *testing.T) {
			w := newWorld(t, longTiming) // no lease runs out: only a hand-over can move a VIP
			w.rebalance = rebalance
			t.Cleanup(w.noOverlap)
			a := w.add("a", three, []string{"web"})
			w.add("b", three, []string{"web"})
			w.setLeader("a")
			a.leadership <- Leadership{Leader: true, Term: 1}
			perNode := func() map[string]int {
				n := map[string]int{}
				for _, v := range three {
					for _, h := range w.holderOf(v.Address) {
						n[h]++
					}
				}
				return n
			}
			eventually(t, "the three VIPs held two and one", func() bool {
				n := perNode()
				return n["a"]+n["b"] == 3 && n["a"] > 0 && n["b"] > 0
			})
			w.add("c", three, []string{"web"})
			if rebalance == placement.Auto {
				eventually(t, "one VIP on each node", func() bool {
					n := perNode()
					return n["a"] == 1 && n["b"] == 1 && n["c"] == 1
				})
				return
			}
			w.mu.Lock()
			from := w.rounds
			w.mu.Unlock()
			eventually(t, "twenty rounds after c joined", func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.rounds >= from+20
			})
			if n := perNode(); n["c"] != 0 {
				t.Errorf("with rebalance manual the joining node got %d VIPs (%v)", n["c"], n)
			}
		})
	}
}

// The leader dies while a follower's lease connection is redialling it, and
// the dial blocks for its whole timeout (a dead host answers no SYN). The
// follower's holder loop must not wait for that dial when it turns to the
// new leader: blocked, it would keep its VIP past its lease while the new
// leader, seeing no renewal, gives the VIP away (two holders; make
// bench-failover -spread saw it for 340 ms). Not blocked, it renews with
// the new leader and keeps its VIP.
func TestFollowerKeepsItsVIPWhileADialToTheDeadLeaderHangs(t *testing.T) {
	w := newWorld(t, testTiming)
	t.Cleanup(w.noOverlap)
	nodes := map[string]*testNode{}
	for _, n := range []string{"a", "b", "c"} {
		nodes[n] = w.add(n, testVIPs, []string{"web"})
	}
	w.setLeader("a")
	nodes["a"].leadership <- Leadership{Leader: true, Term: 1}
	got := w.spreadOver(t, 2)
	f, g := "b", "c"
	if other(got, "b") == "" {
		f, g = "c", "b"
	}
	vip := other(got, f)

	// a dies: its connections break, and the follower's redial hangs.
	w.mu.Lock()
	w.hang["a"] = true
	for _, conn := range w.conns["a"] {
		conn.Close()
	}
	w.conns["a"] = nil
	w.mu.Unlock()
	time.Sleep(testTiming.Renew) // the follower is redialling a now
	w.setLeader(g)
	nodes["a"].leadership <- Leadership{Leader: false, Term: 1}
	nodes[g].leadership <- Leadership{Leader: true, Term: 2}
	end := time.Now().Add(dialHang + time.Second)
	for time.Now().Before(end) {
		if h := w.holderOf(vip); !slices.Equal(h, []string{f}) {
			t.Fatalf("%s on %v while the follower's dial to the dead leader hung, want it left on %s", vip, h, f)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A cluster without spread VIPs (every VIP on the leader, the default)
// sends no lease request, so the leader commits no round: before, each
// follower asked every renewal period and each request cost a Raft entry.
func TestNoSpreadVIPsNoRounds(t *testing.T) {
	w := newWorld(t, testTiming)
	a := w.add("a", nil, []string{"web"})
	w.add("b", nil, []string{"web"})
	w.add("c", nil, []string{"web"})
	w.setLeader("a")
	a.leadership <- Leadership{Leader: true, Term: 1}
	eventually(t, "the leader record", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.record.Node == "a"
	})
	time.Sleep(20 * testTiming.Renew) // twenty renewal periods
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.rounds != 0 || w.writes != 0 {
		t.Errorf("without spread VIPs: %d rounds, %d lease messages; want none", w.rounds, w.writes)
	}
}

// Spread VIPs that a reload adds to a cluster that had none spread over the
// nodes: the followers, which had nothing to ask for, are taken as fit
// until they ask, not as silent (all on the leader, and sticky).
func TestSpreadVIPsAddedByAReloadSpreadOverTheNodes(t *testing.T) {
	w := newWorld(t, testTiming)
	t.Cleanup(w.noOverlap)
	var mu sync.Mutex
	var vips []placement.VIP
	config := func() []placement.VIP {
		mu.Lock()
		defer mu.Unlock()
		return vips
	}
	a := w.addWith("a", config, []string{"web"})
	w.addWith("b", config, []string{"web"})
	w.addWith("c", config, []string{"web"})
	w.setLeader("a")
	a.leadership <- Leadership{Leader: true, Term: 1}
	time.Sleep(2 * testTiming.Duration) // well past the term's first lease
	three := append(slices.Clone(testVIPs), placement.VIP{Address: "198.18.0.102", Placement: placement.Spread, Frontends: []string{"web"}})
	mu.Lock()
	vips = three
	mu.Unlock()
	eventually(t, "one VIP on each node", func() bool {
		on := map[string]bool{}
		for _, v := range three {
			if h := w.holderOf(v.Address); len(h) == 1 {
				on[h[0]] = true
			}
		}
		return len(on) == 3
	})
}
