// Package election elects one leader among vipd nodes with hashicorp/raft,
// discovers members and gossips their fitness with hashicorp/memberlist, and
// replicates the operator's intent (drained backends, maintenance) in the
// Raft log.
package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// ErrNotLeader is wrapped by errors of calls that only the leader can serve.
var ErrNotLeader = errors.New("not the raft leader")

// ErrNotStarted is returned by calls that need Start first (or after Shutdown).
var ErrNotStarted = errors.New("election node not running")

// NotLeaderError says who the leader is, so admin calls can be forwarded.
// errors.Is(err, ErrNotLeader) holds.
type NotLeaderError struct {
	Leader      string // node name, empty when unknown
	LeaderAdmin string // admin address the leader advertises, empty when unknown
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "not the raft leader; no leader known"
	}
	return fmt.Sprintf("not the raft leader; leader is %s (admin %s)", e.Leader, e.LeaderAdmin)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Status is a snapshot of this node's view of the cluster.
type Status struct {
	Node    string   `json:"node"`
	State   string   `json:"state"` // leader | follower | candidate | witness | stopped
	Leader  string   `json:"leader"`
	Term    uint64   `json:"term"`
	Members []Member `json:"members"`
}

// Member merges a node's Raft configuration entry with its gossip record.
type Member struct {
	Name          string `json:"name"`
	RaftAddr      string `json:"raft_addr"`
	Voter         bool   `json:"voter"`
	Alive         bool   `json:"alive"`
	Role          string `json:"role"`
	HealthyPools  int    `json:"healthy_pools"`
	Pools         int    `json:"pools"`
	LinkUp        bool   `json:"link_up"`         // the member's VIP link
	VIPHoldFailed bool   `json:"vip_hold_failed"` // its last VIP claim failed
	Fit           bool   `json:"fit"`             // may take leadership for being healthy
	AdminAddr     string `json:"admin_addr"`
	ConfigDigest  string `json:"config_digest"` // of the config it runs, as it gossips it
}

// Node is one member of the election cluster. Create with New, run with Start,
// stop with Shutdown.
type Node struct {
	opts    Options
	log     *zap.Logger
	raftCfg *raft.Config
	fsm     *fsm
	sec     *security // what the cluster keys make of the transports
	gossip  *gossip
	events  *eventQueue
	metrics *metrics
	started time.Time

	rt          atomic.Pointer[running] // set once by a Start that succeeded
	clustered   atomic.Bool             // Raft has state: bootstrapped or joined
	formed      atomic.Bool             // this node bootstrapped the cluster
	stop        chan struct{}           // closed when the node stops
	wg          sync.WaitGroup          // goroutines started by Start
	reconcileCh chan struct{}           // buffered 1: gossip, fitness or intent changed
	metaCh      chan struct{}           // buffered 1: local metadata changed
	eligibleCh  chan struct{}           // buffered 1: maintenance or leaving changed
	confirmedCh chan uint64             // leader loop -> monitor: term confirmed by Barrier
	leases      leasePort               // the lease protocol on the Raft port

	life    sync.Mutex // serializes Start and Shutdown; guards the fields below
	phase   phase
	down    teardown // undoes what Start opened
	downErr error    // what the teardown reported

	mu          sync.Mutex // guards the fields below
	fitness     Fitness
	leavingOn   bool
	handingOff  int                         // transfers under way (transferTo): the gain is withdrawn meanwhile
	transferred uint64                      // the term a transfer last worked out of: its gain stays withdrawn
	emitted     uint64                      // events emitted so far: the last one's Seq
	lastEmitted Event                       // the latest event emitted
	configSum   string                      // this node's config digest, gossiped
	unreachable map[raft.ServerID]time.Time // leader's failed heartbeats: peer -> last failure
	prevLeader  raft.ServerID               // the last other node seen leading
}

// phase is where a Node is in its life: New, Start, Shutdown (or a failed Start).
type phase int

const (
	phaseNew phase = iota
	phaseRunning
	phaseStopped
)

// running holds what Start created.
type running struct {
	raft     *raft.Raft
	ml       *memberlist.Memberlist
	notifyCh chan bool // raft.Config.NotifyCh: every leadership change, in order
	observer *raft.Observer
	obsCh    chan raft.Observation

	raftDown     sync.Once
	raftShutdown raft.Future
}

// stopRaft shuts raft down once and returns that shutdown's future; a second
// raft.Shutdown would return a future that does not wait.
func (rt *running) stopRaft() raft.Future {
	rt.raftDown.Do(func() { rt.raftShutdown = rt.raft.Shutdown() })
	return rt.raftShutdown
}

// teardown is the undo of each step Start took, run last first: by Start
// itself when a later step fails, by Shutdown otherwise. One path for both.
type teardown []func() error

func (t *teardown) add(undo func() error) { *t = append(*t, undo) }

func (t teardown) run() error {
	var errs []error
	for i := len(t) - 1; i >= 0; i-- {
		if err := t[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// New validates opts. It opens, starts and registers nothing: Start does.
func New(opts Options) (*Node, error) {
	opts, err := opts.validate()
	if err != nil {
		return nil, fmt.Errorf("election options: %w", err)
	}
	n := &Node{
		opts:        opts,
		log:         opts.Logger.Named("election").With(zap.String("node", opts.NodeName)),
		started:     time.Now(),
		stop:        make(chan struct{}),
		reconcileCh: make(chan struct{}, 1),
		metaCh:      make(chan struct{}, 1),
		eligibleCh:  make(chan struct{}, 1),
		confirmedCh: make(chan uint64),
		fitness:     Fitness{LinkUp: true},
		unreachable: map[raft.ServerID]time.Time{},
	}
	if n.sec, err = newSecurity(opts.SecretKeys, opts.TLS); err != nil {
		return nil, fmt.Errorf("election options: %w", err)
	}
	if n.raftCfg, err = n.raftConfig(); err != nil {
		return nil, fmt.Errorf("election options: %w", err)
	}
	// A maintenance change: the leader re-checks at once, and the monitor
	// withdraws or announces.
	n.fsm = newFSM(func() { n.pokeReconcile(); n.pokeEligible() })
	n.gossip = newGossip(n.log.Named("gossip"), n.localMeta, n.pokeReconcile, opts.now)
	worst := n.localMeta()
	worst.Pools, worst.Healthy, worst.Started, worst.LinkUp, worst.VIPHoldFailed, worst.Leaving, worst.Clustered =
		math.MaxInt64, math.MaxInt64, math.MaxInt64, true, true, true, true
	worst.Config = strings.Repeat("f", maxDigestLen)
	if b, _ := json.Marshal(worst); len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("election options: node metadata of %q needs %d bytes, gossip allows %d: shorten name or addresses",
			opts.NodeName, len(b), memberlist.MetaMaxSize)
	}
	n.metrics = newMetrics(n.termGauge, n.lastContactGauge, func() float64 { return float64(n.gossip.aliveCount()) })
	n.events = newEventQueue(n.log)
	return n, nil
}

// raftConfig maps Timing onto raft's knobs and lets raft validate them.
func (n *Node) raftConfig() (*raft.Config, error) {
	t := n.opts.Timing
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(n.opts.NodeName)
	c.HeartbeatTimeout = t.Heartbeat
	c.ElectionTimeout = t.Election
	c.LeaderLeaseTimeout = t.Lease
	// CommitTimeout paces idle AppendEntries that carry the commit index to
	// followers; the leader's own commits do not wait for it. Half a
	// heartbeat, at most raft's default 50 ms: followers learn intent changes
	// quickly without doubling the RPC load of heartbeats.
	c.CommitTimeout = min(t.Heartbeat/2, 50*time.Millisecond)
	// A removed node stays up as a non-member: it can be added again.
	c.ShutdownOnRemove = false
	c.Logger = newHclog(n.log, "raft")
	if err := raft.ValidateConfig(c); err != nil {
		return nil, fmt.Errorf("raft timing %+v: %w", t, err)
	}
	return c, nil
}

// notifyBuffer is the room raft's NotifyCh gives the monitor. raft's main
// loop blocks on a full NotifyCh, and the monitor drains it even while it
// waits for a leader loop to end, so this is slack, not a bound to live by.
const notifyBuffer = 16

// Start opens the Raft stores, binds the Raft transport and gossip, and
// starts the background work: gossip join (retried until it succeeds or ctx
// ends), bootstrap, leadership monitoring. A Start that fails leaves nothing
// open, running or registered, and the node stopped (Events closed).
func (n *Node) Start(ctx context.Context) (err error) {
	n.life.Lock()
	defer n.life.Unlock()
	switch n.phase {
	case phaseRunning:
		return errors.New("election node already started")
	case phaseStopped:
		return ErrNotStarted
	}
	n.phase = phaseRunning
	defer func() {
		if err != nil {
			err = errors.Join(err, n.stopLocked())
		}
	}()

	unregister, err := n.metrics.register(n.opts.Registerer)
	if err != nil {
		return err
	}
	n.down.add(func() error { unregister(); return nil })
	n.events.start() // stopLocked closes it, started or not

	if err := os.MkdirAll(n.opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", n.opts.DataDir, err)
	}
	rt := &running{}
	dbPath := filepath.Join(n.opts.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		return fmt.Errorf("open raft store %s: %w", dbPath, err)
	}
	n.down.add(func() error {
		if err := store.Close(); err != nil {
			return fmt.Errorf("close raft store: %w", err)
		}
		return nil
	})
	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	hlog := newHclog(n.log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.opts.DataDir, 2, hlog)
	if err != nil {
		return fmt.Errorf("open raft snapshots in %s: %w", n.opts.DataDir, err)
	}
	hasState, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		return fmt.Errorf("read raft state in %s: %w", n.opts.DataDir, err)
	}
	n.clustered.Store(hasState)

	tcp, err := listenTCP(n.opts.RaftBind)
	if err != nil {
		return err
	}
	var stream raft.StreamLayer = tcp
	if n.sec.raftServer != nil {
		stream = newTLSLayer(stream, n.sec, ioTimeout(n.opts.Timing), n.log.Named("raft-tls"), n.metrics.handshakeFailures)
	}
	if n.opts.wrapStream != nil {
		stream = n.opts.wrapStream(stream)
	}
	stream = n.leases.wrap(stream)
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: ioTimeout(n.opts.Timing), Logger: hlog,
	})
	n.down.add(trans.Close) // raft's shutdown closes it too; a second Close does nothing

	cfg := *n.raftCfg
	rt.notifyCh = make(chan bool, notifyBuffer)
	cfg.NotifyCh = rt.notifyCh
	rt.raft, err = raft.NewRaft(&cfg, n.fsm, logs, store, snaps, trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.down.add(func() error {
		if err := rt.stopRaft().Error(); err != nil {
			return fmt.Errorf("raft shutdown: %w", err)
		}
		return nil
	})
	rt.obsCh = make(chan raft.Observation, 64)
	rt.observer = raft.NewObserver(rt.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	rt.raft.RegisterObserver(rt.observer)
	n.down.add(func() error { rt.raft.DeregisterObserver(rt.observer); return nil })

	mc := n.memberlistConfig()
	if n.opts.wrapGossip != nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: log.New(mc.LogOutput, "", 0),
		})
		if err != nil {
			return fmt.Errorf("start gossip on %s: %w", n.opts.GossipBind, err)
		}
		mc.Transport = n.opts.wrapGossip(nt)
		n.down.add(func() error {
			if rt.ml == nil { // memberlist owns the transport once Create succeeded
				return mc.Transport.Shutdown()
			}
			return nil
		})
	}
	rt.ml, err = memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("start gossip on %s: %w", n.opts.GossipBind, err)
	}
	n.down.add(func() error {
		if err := rt.ml.Shutdown(); err != nil {
			return fmt.Errorf("gossip shutdown: %w", err)
		}
		return nil
	})
	n.rt.Store(rt)
	n.log.Info("election started", zap.String("raft", n.opts.RaftBind), zap.String("gossip", n.opts.GossipBind),
		zap.String("role", string(n.opts.Role)), zap.Bool("existing_state", hasState), zap.Int("bootstrap_expect", n.opts.BootstrapExpect))

	n.wg.Add(4)
	go n.monitor(rt)
	go n.metaLoop(rt)
	go n.joinLoop(ctx, rt)
	go n.reconnectLoop(rt)
	if n.opts.Timing.WatchLeader {
		n.wg.Add(1)
		go n.leaderWatch(rt)
	}
	n.down.add(func() error {
		rt.stopRaft() // fails pending futures, so loops blocked in raft return
		n.wg.Wait()
		return nil
	})
	return nil
}

// ioTimeout is the Raft transport's I/O deadline: long enough for a
// snapshot chunk, short enough that a silent peer is noticed.
func ioTimeout(t Timing) time.Duration { return max(10*t.Election, time.Second) }

func (n *Node) memberlistConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.Name = n.opts.NodeName
	host, portStr, _ := net.SplitHostPort(n.opts.GossipBind) // validated in New
	port, _ := strconv.Atoi(portStr)
	c.BindAddr, c.BindPort = host, port
	c.AdvertisePort = port
	if ip := net.ParseIP(host); !ip.IsUnspecified() {
		c.AdvertiseAddr = host
	}
	// Metadata (fitness) should spread within a few hundred milliseconds.
	c.GossipInterval = 100 * time.Millisecond
	// Push-pull and reconnect attempts give up on a silent peer as Raft does,
	// instead of memberlist's 10 s, so Shutdown is never held long.
	c.TCPTimeout = ioTimeout(n.opts.Timing)
	c.Delegate = n.gossip
	c.Events = n.gossip
	c.LogOutput = &levelWriter{z: n.log.Named("memberlist")}
	c.Keyring = n.sec.keyring // nil: gossip in clear
	return c
}

// localMeta is this node's gossip record.
func (n *Node) localMeta() meta {
	n.mu.Lock()
	f, leaving, digest := n.fitness, n.leavingOn, n.configSum
	n.mu.Unlock()
	return meta{
		RaftAddr: n.opts.RaftBind, Role: n.opts.Role, Admin: n.opts.AdminAddr,
		Pools: f.Pools, Healthy: f.HealthyPools, LinkUp: f.LinkUp, VIPHoldFailed: f.VIPHoldFailed,
		Leaving: leaving, Clustered: n.clustered.Load(), Started: n.started.UnixNano(),
		Config: digest,
	}
}

func (n *Node) pokeReconcile() {
	select {
	case n.reconcileCh <- struct{}{}:
	default:
	}
}

func (n *Node) pokeEligible() {
	select {
	case n.eligibleCh <- struct{}{}:
	default:
	}
}

func (n *Node) pokeMeta() {
	select {
	case n.metaCh <- struct{}{}:
	default:
	}
}

// metaLoop re-gossips local metadata when it changes, off the caller's path.
// Until this node has Raft state it also watches for the first log entry (a
// leader added it): raft signals nothing for that, so it is polled, once a
// heartbeat, and gossiped so that nobody bootstraps beside this node.
func (n *Node) metaLoop(rt *running) {
	defer n.wg.Done()
	t := time.NewTicker(n.opts.Timing.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			if n.clustered.Load() {
				t.Stop()
				continue
			}
			if rt.raft.LastIndex() == 0 {
				continue
			}
			n.clustered.Store(true)
		case <-n.metaCh:
		}
		if err := rt.ml.UpdateNode(n.opts.Timing.Election * 5); err != nil {
			n.log.Warn("gossip metadata update", zap.Error(err))
		}
	}
}

// Events delivers leadership changes. It is closed after Shutdown; treat
// the close as a loss.
func (n *Node) Events() <-chan Event { return n.events.out }

// maxDigestLen bounds SetConfigDigest's digest, so metadata always fits.
const maxDigestLen = 64

// SetConfigDigest gossips the digest of the config this node runs, so every
// member's /status shows which nodes run a config that differs. A digest
// longer than maxDigestLen is cut to it.
func (n *Node) SetConfigDigest(digest string) {
	digest = digest[:min(len(digest), maxDigestLen)]
	n.mu.Lock()
	changed := n.configSum != digest
	n.configSum = digest
	n.mu.Unlock()
	if changed {
		n.pokeMeta()
	}
}

// SetFitness gossips this node's fitness; the leader hands off when its own
// fitness stays bad longer than FitnessGrace.
func (n *Node) SetFitness(f Fitness) {
	n.mu.Lock()
	changed := n.fitness != f
	n.fitness = f
	n.mu.Unlock()
	if changed {
		n.pokeMeta()
		n.pokeReconcile()
	}
}

func (n *Node) currentFitness() Fitness {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fitness
}

func (n *Node) leaving() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leavingOn
}

func (n *Node) handingOffNow() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.handingOff > 0
}

func (n *Node) running() (*running, error) {
	rt := n.rt.Load()
	if rt == nil {
		return nil, ErrNotStarted
	}
	select {
	case <-n.stop:
		return nil, ErrNotStarted
	default:
	}
	return rt, nil
}

// Status reports this node's view. State is "stopped" before Start and
// after Shutdown; a witness reports "witness" unless it leads.
func (n *Node) Status() Status {
	st := Status{Node: n.opts.NodeName, State: "stopped", Members: []Member{}}
	rt := n.rt.Load()
	if rt == nil {
		return st
	}
	switch state := rt.raft.State(); {
	case state == raft.Leader:
		st.State = "leader"
	case state == raft.Shutdown:
	case n.opts.Role == RoleWitness:
		st.State = "witness"
	case state == raft.Candidate:
		st.State = "candidate"
	default:
		st.State = "follower"
	}
	_, id := rt.raft.LeaderWithID()
	st.Leader = string(id)
	st.Term = rt.raft.CurrentTerm()

	members := map[string]*Member{}
	if f := rt.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			members[string(s.ID)] = &Member{Name: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter}
		}
	}
	for name, p := range n.gossip.snapshot() {
		m, ok := members[name]
		if !ok {
			m = &Member{Name: name, RaftAddr: p.meta.RaftAddr}
			members[name] = m
		}
		f := p.meta.fitness()
		m.Alive, m.Role, m.AdminAddr = p.alive, string(p.meta.Role), p.meta.Admin
		m.Pools, m.HealthyPools, m.LinkUp, m.VIPHoldFailed, m.Fit = f.Pools, f.HealthyPools, f.LinkUp, f.VIPHoldFailed, p.meta.fit()
		m.ConfigDigest = p.meta.Config
	}
	for _, m := range members {
		st.Members = append(st.Members, *m)
	}
	sortMembers(st.Members)
	return st
}

// Clustered reports whether this node has Raft state: it formed the cluster
// (bootstrap) or joined one and received its log, in this run or before a
// restart. Until then it cannot vote or lead.
func (n *Node) Clustered() bool { return n.clustered.Load() }

// Intent returns the replicated operator intent as applied on this node.
func (n *Node) Intent() Intent { return n.fsm.intent() }

// IntentChanges delivers the latest Intent after each applied change.
func (n *Node) IntentChanges() <-chan Intent { return n.fsm.changes }

// SetDrained records, through the leader, that a backend is drained.
func (n *Node) SetDrained(pool, backend string, drained bool) error {
	if pool == "" || backend == "" {
		return fmt.Errorf("set drained %q/%q: pool and backend must not be empty", pool, backend)
	}
	if err := n.apply(command{Op: opDrain, Pool: pool, Backend: backend, On: drained}); err != nil {
		return fmt.Errorf("set drained %s/%s=%t: %w", pool, backend, drained, err)
	}
	return nil
}

// SetMaintenance records, through the leader, that a node must not lead.
func (n *Node) SetMaintenance(node string, on bool) error {
	if node == "" {
		return errors.New("set maintenance: node name must not be empty")
	}
	if err := n.apply(command{Op: opMaintenance, Node: node, On: on}); err != nil {
		return fmt.Errorf("set maintenance %s=%t: %w", node, on, err)
	}
	return nil
}

func (n *Node) apply(c command) error {
	_, err := n.applyResult(c)
	return err
}

// applyResult commits c through this node, the leader, and returns the
// fsm's answer when it is not an error.
func (n *Node) applyResult(c command) (interface{}, error) {
	rt, err := n.running()
	if err != nil {
		return nil, err
	}
	if rt.raft.State() != raft.Leader {
		return nil, n.notLeader(rt)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	f := rt.raft.Apply(data, n.opTimeout())
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, n.notLeader(rt)
		}
		return nil, fmt.Errorf("raft apply: %w", err)
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// opTimeout bounds one Raft membership or log operation.
func (n *Node) opTimeout() time.Duration { return max(20*n.opts.Timing.Election, 2*time.Second) }

func (n *Node) notLeader(rt *running) error {
	_, id := rt.raft.LeaderWithID()
	e := &NotLeaderError{Leader: string(id)}
	if p, ok := n.gossip.get(e.Leader); ok {
		e.LeaderAdmin = p.meta.Admin
	}
	return e
}

// TransferLeadership hands leadership to a fit voter (any live voter if none
// is fit). Only the leader can.
func (n *Node) TransferLeadership() error {
	rt, err := n.running()
	if err != nil {
		return err
	}
	if rt.raft.State() != raft.Leader {
		return fmt.Errorf("transfer leadership: %w", n.notLeader(rt))
	}
	target, err := n.pickTarget(rt, false, func(raft.ServerID) bool { return false })
	if err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return n.transferTo(rt, target, "operator")
}

// Remove takes a node (usually a crashed one) out of the Raft configuration.
// Only the leader can. The node is not re-added while it stays up; after a
// restart it joins again.
func (n *Node) Remove(name string) error {
	rt, err := n.running()
	if err != nil {
		return err
	}
	if name == n.opts.NodeName {
		return fmt.Errorf("remove %s: %w", name, ErrLocalNode)
	}
	if rt.raft.State() != raft.Leader {
		return fmt.Errorf("remove %s: %w", name, n.notLeader(rt))
	}
	f := rt.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("remove %s: read configuration: %w", name, err)
	}
	if !inConfig(f.Configuration(), name) {
		return fmt.Errorf("remove %s: %w", name, ErrNotMember)
	}
	n.gossip.tombstone(name)
	if err := rt.raft.RemoveServer(raft.ServerID(name), 0, n.opTimeout()).Error(); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	n.log.Info("removed raft server", zap.String("server", name), zap.String("by", "operator"))
	return nil
}

func inConfig(c raft.Configuration, name string) bool {
	for _, s := range c.Servers {
		if string(s.ID) == name {
			return true
		}
	}
	return false
}

// Leave departs on purpose: it marks this node leaving in gossip, hands
// leadership away if it leads, waits until the leader removed it from the
// Raft configuration, then leaves gossip. A single-voter cluster just leaves.
func (n *Node) Leave(ctx context.Context) error {
	rt, err := n.running()
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.leavingOn = true
	n.mu.Unlock()
	n.pokeEligible() // withdraw an announced leadership first
	if err := rt.ml.UpdateNode(n.opTimeout()); err != nil {
		n.log.Warn("gossip leaving flag", zap.Error(err))
	}
	n.pokeReconcile()
	n.log.Info("leaving the cluster")
	waitErr := n.waitRemoved(ctx, rt)
	if err := rt.ml.Leave(n.opTimeout()); err != nil && waitErr == nil {
		waitErr = fmt.Errorf("leave gossip: %w", err)
	}
	return waitErr
}

// waitRemoved polls until this node is out of the Raft configuration. The
// leader stops replicating to a server as soon as it removes it, and only
// tries once to deliver that entry; so silence from the leader for
// removedAfter heartbeats while leaving also counts as removed. Were that
// wrong (Raft cut but gossip up), the leader still removes this node when
// gossip reports it gone, since its last metadata says leaving.
func (n *Node) waitRemoved(ctx context.Context, rt *running) error {
	const removedAfter = 5
	silence := removedAfter * n.opts.Timing.Heartbeat
	start := time.Now()
	t := time.NewTicker(n.opts.Timing.Heartbeat / 2)
	defer t.Stop()
	for {
		f := rt.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return fmt.Errorf("leave: read configuration: %w", err)
		}
		c := f.Configuration()
		switch {
		case !inConfig(c, n.opts.NodeName):
			n.log.Info("removed from raft configuration")
			return nil
		case voters(c) == 1:
			n.log.Warn("leaving as the only voter: the configuration keeps this node")
			return nil
		case rt.raft.State() != raft.Leader && time.Since(start) > silence && time.Since(rt.raft.LastContact()) > silence:
			n.log.Info("leader no longer contacts this node; taking it as removed", zap.Duration("silence", time.Since(rt.raft.LastContact())))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("leave: still in the raft configuration: %w", ctx.Err())
		case <-n.stop:
			return fmt.Errorf("leave: %w", ErrNotStarted)
		case <-t.C:
		}
	}
}

func voters(c raft.Configuration) int {
	v := 0
	for _, s := range c.Servers {
		if s.Suffrage == raft.Voter {
			v++
		}
	}
	return v
}

// Shutdown reports a loss if leading, stops Raft and gossip (without leaving:
// a crashed and a shut-down node look alike), waits for every goroutine and
// closes Events. Safe to call twice, and before or after a failed Start.
func (n *Node) Shutdown() error {
	n.life.Lock()
	defer n.life.Unlock()
	if n.phase != phaseStopped {
		n.stopLocked()
	}
	return n.downErr
}

// stopLocked runs the teardown and closes Events (it closes with the event
// queue when Start got that far). Call with life held, once.
func (n *Node) stopLocked() error {
	close(n.stop)
	started := n.phase == phaseRunning && n.rt.Load() != nil
	n.downErr = n.down.run()
	n.down = nil
	n.events.close()
	n.phase = phaseStopped
	if started {
		n.log.Info("election stopped")
	}
	return n.downErr
}

func (n *Node) termGauge() float64 {
	if rt := n.rt.Load(); rt != nil {
		return float64(rt.raft.CurrentTerm())
	}
	return 0
}

func (n *Node) lastContactGauge() float64 {
	rt := n.rt.Load()
	if rt == nil {
		return time.Since(n.started).Seconds()
	}
	if rt.raft.State() == raft.Leader {
		return 0
	}
	lc := rt.raft.LastContact()
	if lc.IsZero() {
		return time.Since(n.started).Seconds()
	}
	return time.Since(lc).Seconds()
}
