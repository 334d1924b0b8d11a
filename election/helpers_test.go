package election

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vipd/vipd/internal/testenv"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestMain(m *testing.M) {
	if d, err := time.ParseDuration(os.Getenv(spinEnv)); err == nil {
		spin(d) // child process of TestNoFlappingUnderFullCPULoad
		os.Exit(0)
	}
	code := m.Run()
	if code == 0 {
		code = verifyNoLeaks()
	}
	os.Exit(code)
}

// verifyNoLeaks is goleak's check with a longer grace instead of ignore
// rules: memberlist.Shutdown does not wait for goroutines that end on their
// own timeouts (a probe and its TCP fallback, an indirect-ping nack timer,
// a stream handler bounded by TCPTimeout, 10 s on LAN). One rule stays:
// await's waiter on a raft future that raft never answers because it shut
// down with the request still queued (see await).
func verifyNoLeaks() int {
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := goleak.Find(goleak.IgnoreAnyFunction("github.com/vipd/vipd/election.await.func1"))
		if err == nil {
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePort is a loopback port for a node to bind (testenv.FreePort).
func freePort(t *testing.T) int { return testenv.FreePort(t) }

// cutLayer is a Raft StreamLayer a test can cut: while cut, dials fail,
// accepted connections are closed at once and live ones are closed.
type cutLayer struct {
	raft.StreamLayer
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func (c *cutLayer) track(conn net.Conn) (net.Conn, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		_ = conn.Close()
		return nil, false
	}
	c.conns[conn] = struct{}{}
	return conn, true
}

func (c *cutLayer) Accept() (net.Conn, error) {
	for {
		conn, err := c.StreamLayer.Accept()
		if err != nil {
			return nil, err
		}
		if conn, ok := c.track(conn); ok {
			return conn, nil
		}
	}
}

func (c *cutLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c.mu.Lock()
	cut := c.cut
	c.mu.Unlock()
	if cut {
		return nil, errors.New("test partition: dial refused")
	}
	conn, err := c.StreamLayer.Dial(address, timeout)
	if err != nil {
		return nil, err
	}
	if conn, ok := c.track(conn); ok {
		return conn, nil
	}
	return nil, errors.New("test partition: dial refused")
}

func (c *cutLayer) setCut(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = cut
	if cut {
		for conn := range c.conns {
			_ = conn.Close()
		}
		c.conns = map[net.Conn]struct{}{}
	}
}

// cutGossip is a memberlist transport a test can cut: while cut, packets
// are lost in both directions and streams are refused in both directions,
// like a partition that leaves the Raft transport alone.
type cutGossip struct {
	*memberlist.NetTransport
	cut     atomic.Bool
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup

	mu    sync.Mutex
	dials map[string]int // stream dials attempted, by address
}

func newCutGossip(nt *memberlist.NetTransport) *cutGossip {
	c := &cutGossip{NetTransport: nt, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{}), dials: map[string]int{}}
	c.wg.Add(2)
	go forwardUncut(c, nt.PacketCh(), c.packets, func(*memberlist.Packet) {})
	go forwardUncut(c, nt.StreamCh(), c.streams, func(conn net.Conn) { _ = conn.Close() })
	return c
}

// forwardUncut passes what arrives on in to out, dropping it while c is cut,
// until c shuts down.
func forwardUncut[T any](c *cutGossip, in <-chan T, out chan<- T, drop func(T)) {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case v := <-in:
			if c.cut.Load() {
				drop(v)
				continue
			}
			select {
			case out <- v:
			case <-c.done:
				drop(v)
				return
			}
		}
	}
}

func (c *cutGossip) PacketCh() <-chan *memberlist.Packet { return c.packets }
func (c *cutGossip) StreamCh() <-chan net.Conn           { return c.streams }

func (c *cutGossip) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if c.cut.Load() {
		return time.Now(), nil // lost on the wire, as UDP would be
	}
	return c.NetTransport.WriteToAddress(b, a)
}

func (c *cutGossip) WriteTo(b []byte, addr string) (time.Time, error) {
	return c.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (c *cutGossip) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c.mu.Lock()
	c.dials[a.Addr]++
	c.mu.Unlock()
	if c.cut.Load() {
		return nil, errors.New("test partition: gossip dial refused")
	}
	return c.NetTransport.DialAddressTimeout(a, timeout)
}

// dialsTo counts the stream dials made to addr so far.
func (c *cutGossip) dialsTo(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials[addr]
}

func (c *cutGossip) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return c.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (c *cutGossip) Shutdown() error {
	err := c.NetTransport.Shutdown()
	close(c.done)
	c.wg.Wait()
	return err
}

// interval is one announced leadership of one node.
type interval struct {
	node       string
	from, to   time.Time // to is zero while open
	term       uint64
	gainedSeen time.Time
}

// recorder consumes a node's Events and keeps the derived state.
type recorder struct {
	name string
	done chan struct{}

	mu        sync.Mutex
	leader    bool
	term      uint64
	events    []Event
	intervals []interval
	lastGain  time.Time
}

func record(name string, ch <-chan Event) *recorder {
	r := &recorder{name: name, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for e := range ch {
			now := time.Now()
			r.mu.Lock()
			r.events = append(r.events, e)
			if e.Leader && !r.leader {
				r.intervals = append(r.intervals, interval{node: name, from: now, term: e.Term})
				r.lastGain = now
			}
			if !e.Leader && r.leader {
				r.intervals[len(r.intervals)-1].to = now
			}
			r.leader, r.term = e.Leader, e.Term
			r.mu.Unlock()
		}
		r.mu.Lock()
		if r.leader { // a closed channel counts as a loss
			r.intervals[len(r.intervals)-1].to = time.Now()
			r.leader = false
		}
		r.mu.Unlock()
	}()
	return r
}

func (r *recorder) isLeader() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leader
}

func (r *recorder) gains() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.intervals)
}

func (r *recorder) changes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// lastLoss is the latest loss event received, or the zero Event.
func (r *recorder) lastLoss() Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if !r.events[i].Leader {
			return r.events[i]
		}
	}
	return Event{}
}

func (r *recorder) gainedAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastGain
}

func (r *recorder) allIntervals() []interval {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]interval(nil), r.intervals...)
}

// tnode is one node of a test cluster.
type tnode struct {
	*Node
	opts Options
	rec  *recorder
	cut  *cutLayer
	gcut *cutGossip
	reg  *prometheus.Registry
	up   bool
}

// cluster is a set of nodes on loopback with real TCP and UDP.
type cluster struct {
	t     *testing.T
	nodes []*tnode
	sink  *testSink
}

// testSink writes log lines to the test log until the test ends: memberlist
// does not wait for its probe goroutines on Shutdown, and logging through t
// after the test completed panics.
type testSink struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (s *testSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		s.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (s *testSink) Sync() error { return nil }

func (s *testSink) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
}

// Timings for test clusters. Tests of the election logic use relaxedTiming:
// this shared 2-core VM stalls whole processes for 100-200 ms when other
// jobs run, which moves lan leadership now and then (see the report), and
// those tests are about logic, not timing. Tests that measure or prove the
// lan profile use lanTiming. lanTiming, fastTiming and wanTiming are
// config's profiles (docs/failover.md), which config resolves before New.
var (
	relaxedTiming = Timing{Heartbeat: 300 * time.Millisecond, Election: 300 * time.Millisecond, Lease: 200 * time.Millisecond}
	lanTiming     = Timing{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, Lease: 70 * time.Millisecond}
	fastTiming    = Timing{Heartbeat: 65 * time.Millisecond, Election: 65 * time.Millisecond, Lease: 50 * time.Millisecond, WatchLeader: true}
	wanTiming     = Timing{Heartbeat: time.Second, Election: time.Second, Lease: 500 * time.Millisecond}
)

// testReconnectTimeout keeps dead members for the whole of any test; the
// reaping test moves a fake clock past it.
const testReconnectTimeout = time.Hour

// newCluster starts n nodes with the given timing that all join each other
// and wait for bootstrapExpect of them. mod may adjust each node's options.
func newCluster(t *testing.T, n, expect int, timing Timing, mod func(i int, o *Options)) *cluster {
	t.Helper()
	c := &cluster{t: t, sink: &testSink{t: t}}
	t.Cleanup(c.sink.close) // runs after c.shutdown below
	var join []string
	dir := t.TempDir()
	for i := range n {
		o := Options{
			NodeName:         fmt.Sprintf("n%d", i),
			RaftBind:         fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			GossipBind:       fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			BootstrapExpect:  expect,
			DataDir:          filepath.Join(dir, fmt.Sprintf("n%d", i)),
			Role:             RoleVoter,
			FitnessGrace:     time.Second,
			ReconnectTimeout: testReconnectTimeout,
			AdminAddr:        fmt.Sprintf("127.0.0.1:%d", 9900+i),
			Timing:           timing,
		}
		join = append(join, o.GossipBind)
		c.nodes = append(c.nodes, &tnode{opts: o})
	}
	for i, tn := range c.nodes {
		tn.opts.Join = join
		if mod != nil {
			mod(i, &tn.opts)
		}
	}
	t.Cleanup(c.shutdown)
	for _, tn := range c.nodes {
		c.start(tn)
	}
	return c
}

// add starts one more node joining the cluster.
func (c *cluster) add(mod func(o *Options)) *tnode {
	c.t.Helper()
	first := c.nodes[0].opts
	o := Options{
		NodeName:         fmt.Sprintf("n%d", len(c.nodes)),
		RaftBind:         fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
		GossipBind:       fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
		DataDir:          filepath.Join(filepath.Dir(first.DataDir), fmt.Sprintf("n%d", len(c.nodes))),
		Role:             RoleVoter,
		FitnessGrace:     first.FitnessGrace,
		ReconnectTimeout: first.ReconnectTimeout,
		Join:             first.Join,
		Timing:           first.Timing,
		now:              first.now,
	}
	if mod != nil {
		mod(&o)
	}
	tn := &tnode{opts: o}
	c.nodes = append(c.nodes, tn)
	c.start(tn)
	return tn
}

// start creates and starts tn from its options (again after a stop).
func (c *cluster) start(tn *tnode) {
	c.t.Helper()
	tl := zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), c.sink, zapcore.WarnLevel)
	o := tn.opts
	o.Logger = zap.New(tl).Named(o.NodeName)
	tn.cut, tn.gcut = nil, nil
	tn.reg = prometheus.NewRegistry()
	o.Registerer = tn.reg
	o.wrapStream = func(s raft.StreamLayer) raft.StreamLayer {
		tn.cut = &cutLayer{StreamLayer: s, conns: map[net.Conn]struct{}{}}
		return tn.cut
	}
	o.wrapGossip = func(nt *memberlist.NetTransport) memberlist.NodeAwareTransport {
		tn.gcut = newCutGossip(nt)
		return tn.gcut
	}
	node, err := New(o)
	if err != nil {
		c.t.Fatalf("new %s: %v", o.NodeName, err)
	}
	tn.Node, tn.up = node, true
	tn.rec = record(o.NodeName, node.Events())
	if err := node.Start(context.Background()); err != nil {
		c.t.Fatalf("start %s: %v", o.NodeName, err)
	}
}

// stop shuts tn down like a crash (no leave) and waits for its recorder.
func (c *cluster) stop(tn *tnode) {
	c.t.Helper()
	if !tn.up {
		return
	}
	tn.up = false
	if err := tn.Shutdown(); err != nil {
		c.t.Errorf("shutdown %s: %v", tn.opts.NodeName, err)
	}
	<-tn.rec.done
}

func (c *cluster) shutdown() {
	var wg sync.WaitGroup
	for _, tn := range c.nodes {
		if tn.up {
			wg.Add(1)
			go func() { defer wg.Done(); c.stop(tn) }()
		}
	}
	wg.Wait()
}

func (c *cluster) up() []*tnode {
	var out []*tnode
	for _, tn := range c.nodes {
		if tn.up {
			out = append(out, tn)
		}
	}
	return out
}

// leaders returns the running nodes whose events say leader.
func (c *cluster) leaders() []*tnode {
	var out []*tnode
	for _, tn := range c.up() {
		if tn.rec.isLeader() {
			out = append(out, tn)
		}
	}
	return out
}

// waitLeader waits until exactly one running node (other than except)
// announces leadership and returns it.
func (c *cluster) waitLeader(timeout time.Duration, except ...*tnode) *tnode {
	c.t.Helper()
	var got *tnode
	eventually(c.t, timeout, func() error {
		ls := c.leaders()
		if len(ls) != 1 {
			return fmt.Errorf("%d leaders announced", len(ls))
		}
		for _, e := range except {
			if ls[0] == e {
				return fmt.Errorf("still %s", e.opts.NodeName)
			}
		}
		got = ls[0]
		return nil
	})
	return got
}

// waitVoters waits until the leader's configuration has exactly these voters.
// formedCluster starts three nodes with relaxed timing and returns once one
// leads and all three are voters.
func formedCluster(t *testing.T) (*cluster, *tnode) {
	t.Helper()
	return formedClusterWith(t, nil)
}

// formedClusterWith is formedCluster with mod applied to each node's options.
func formedClusterWith(t *testing.T, mod func(i int, o *Options)) (*cluster, *tnode) {
	t.Helper()
	c := newCluster(t, 3, 3, relaxedTiming, mod)
	leader := c.waitLeader(15 * time.Second)
	c.waitVoters(5*time.Second, "n0", "n1", "n2")
	return c, leader
}

// follower returns a node other than leader.
func (c *cluster) follower(leader *tnode) *tnode {
	for _, tn := range c.nodes {
		if tn != leader {
			return tn
		}
	}
	c.t.Fatal("no follower in the cluster")
	return nil
}

func (c *cluster) waitVoters(timeout time.Duration, names ...string) {
	c.t.Helper()
	eventually(c.t, timeout, func() error {
		ls := c.leaders()
		if len(ls) != 1 {
			return fmt.Errorf("%d leaders", len(ls))
		}
		var got []string
		for _, m := range ls[0].Status().Members {
			if m.Voter {
				got = append(got, m.Name)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(names) {
			return fmt.Errorf("voters %v, want %v", got, names)
		}
		return nil
	})
}

// checkNoOverlap fails if two nodes' announced leaderships overlap in time.
func (c *cluster) checkNoOverlap() {
	c.t.Helper()
	var all []interval
	for _, tn := range c.nodes {
		if tn.rec != nil {
			all = append(all, tn.rec.allIntervals()...)
		}
	}
	end := func(iv interval) time.Time {
		if iv.to.IsZero() {
			return time.Now()
		}
		return iv.to
	}
	for i, a := range all {
		for _, b := range all[i+1:] {
			if a.node != b.node && a.from.Before(end(b)) && b.from.Before(end(a)) {
				c.t.Errorf("overlapping leadership: %s term %d [%v, %v] and %s term %d [%v, %v]",
					a.node, a.term, a.from.Format("15:04:05.000"), end(a).Format("15:04:05.000"),
					b.node, b.term, b.from.Format("15:04:05.000"), end(b).Format("15:04:05.000"))
			}
		}
	}
}

func (tn *tnode) raft() *raft.Raft { return tn.rt.Load().raft }

// eventually retries f until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fmtErr(format string, args ...any) error { return fmt.Errorf(format, args...) }

func raftID(tn *tnode) raft.ServerID { return raft.ServerID(tn.opts.NodeName) }

func raftAddr(tn *tnode) raft.ServerAddress { return raft.ServerAddress(tn.opts.RaftBind) }

// metric returns the value of a gauge or counter the node registered.
func (tn *tnode) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := tn.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// stateWatch counts tn's Raft state changes into and out of leader, seen
// through a raft observer, so a test can tell that a node led for a moment
// even when it never announced leadership.
type stateWatch struct {
	ch           chan raft.Observation
	leader       bool
	gains, drops int
}

func watchStates(t *testing.T, tn *tnode) *stateWatch {
	t.Helper()
	w := &stateWatch{ch: make(chan raft.Observation, 64), leader: tn.raft().State() == raft.Leader}
	obs := raft.NewObserver(w.ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	r := tn.raft()
	r.RegisterObserver(obs)
	t.Cleanup(func() { r.DeregisterObserver(obs) })
	return w
}

// counts folds what was observed so far and returns how often the node
// became leader and stopped being leader since the watch began.
func (w *stateWatch) counts() (gains, drops int) {
	for {
		select {
		case o := <-w.ch:
			leader := o.Data.(raft.RaftState) == raft.Leader
			switch {
			case leader && !w.leader:
				w.gains++
			case !leader && w.leader:
				w.drops++
			}
			w.leader = leader
		default:
			return w.gains, w.drops
		}
	}
}
