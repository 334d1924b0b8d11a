package election

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// maxNameLen bounds node names so metadata always fits memberlist's limit.
const maxNameLen = 128

// meta is what a node gossips about itself. Short keys keep it far below
// memberlist.MetaMaxSize (512 bytes); New checks the worst case.
type meta struct {
	RaftAddr string `json:"r"`
	Role     Role   `json:"o"`
	Admin    string `json:"a,omitempty"`
	Pools    int    `json:"p"`
	Healthy  int    `json:"h"`
	// LinkUp is the VIP link alone. Nodes before VIPHoldFailed existed sent
	// "link up and the last claim did not fail" here, which still reads right.
	LinkUp bool `json:"l"`
	// VIPHoldFailed is omitted when false: metadata without it (an older
	// node) reads as no failed hold.
	VIPHoldFailed bool   `json:"vf,omitempty"`
	Leaving       bool   `json:"x,omitempty"` // set before a deliberate Leave
	Clustered     bool   `json:"c,omitempty"` // has Raft state: nobody may bootstrap beside it
	Started       int64  `json:"s"`           // start time: a restart changes the metadata
	Config        string `json:"d,omitempty"` // the digest of the config the node runs
}

func (m meta) fitness() Fitness {
	return Fitness{Pools: m.Pools, HealthyPools: m.Healthy, LinkUp: m.LinkUp, VIPHoldFailed: m.VIPHoldFailed}
}

// fit reports whether this peer may take leadership for being healthy. A
// witness never reports itself fit.
func (m meta) fit() bool { return m.Role == RoleVoter && m.fitness().Fit() }

// peer is the last thing gossip told us about a node.
type peer struct {
	meta      meta
	alive     bool
	addr      string    // gossip address, for reconnecting after a partition
	deadSince time.Time // when gossip declared it dead; zero while alive
}

// gossip keeps the cluster view built from memberlist events. memberlist
// calls it from its own goroutines; it only updates the map and pokes the
// node, never blocks.
type gossip struct {
	log   *zap.Logger
	local func() meta      // this node's metadata, read when memberlist asks
	poke  func()           // something changed: the leader should reconcile
	now   func() time.Time // stamps deaths, for reaping

	mu         sync.Mutex
	peers      map[string]peer
	tombstones map[string]int64 // removed by an operator: name -> Started at removal
}

var (
	_ memberlist.Delegate      = (*gossip)(nil)
	_ memberlist.EventDelegate = (*gossip)(nil)
)

func newGossip(log *zap.Logger, local func() meta, poke func(), now func() time.Time) *gossip {
	return &gossip{log: log, local: local, poke: poke, now: now, peers: map[string]peer{}, tombstones: map[string]int64{}}
}

func (g *gossip) NodeMeta(limit int) []byte {
	b, err := json.Marshal(g.local())
	if err != nil || len(b) > limit {
		// New rules this out; log instead of sending a truncated record.
		g.log.Error("node metadata does not fit", zap.Int("bytes", len(b)), zap.Int("limit", limit), zap.Error(err))
		return nil
	}
	return b
}

func (g *gossip) NotifyMsg([]byte)                           {}
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.update(n, true) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.update(n, true) }

// NotifyLeave fires for crashed and departed nodes alike; the node keeps its
// last metadata, so a Leaving flag set before a deliberate leave survives.
func (g *gossip) NotifyLeave(n *memberlist.Node) { g.update(n, false) }

func (g *gossip) update(n *memberlist.Node, alive bool) {
	var m meta
	if err := json.Unmarshal(n.Meta, &m); err != nil {
		g.log.Warn("ignoring gossip member with unreadable metadata", zap.String("member", n.Name), zap.Error(err))
		return
	}
	g.mu.Lock()
	if st, ok := g.tombstones[n.Name]; ok && st != m.Started {
		delete(g.tombstones, n.Name) // the removed node restarted: it may join again
	}
	old, known := g.peers[n.Name]
	p := peer{meta: m, alive: alive, addr: n.Address()}
	switch {
	case alive:
	case known && !old.alive:
		p.deadSince = old.deadSince
	default:
		p.deadSince = g.now()
	}
	g.peers[n.Name] = p
	g.mu.Unlock()
	if !known || old.alive != alive {
		g.log.Info("gossip member changed", zap.String("member", n.Name), zap.Bool("alive", alive),
			zap.String("raft_addr", m.RaftAddr), zap.String("role", string(m.Role)), zap.Bool("leaving", m.Leaving))
	}
	g.poke()
}

// snapshot returns a copy of the view, with tombstoned names left out.
func (g *gossip) snapshot() map[string]peer {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]peer, len(g.peers))
	for name, p := range g.peers {
		if _, dead := g.tombstones[name]; !dead {
			out[name] = p
		}
	}
	return out
}

func (g *gossip) get(name string) (peer, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.peers[name]
	return p, ok
}

// tombstone keeps an operator-removed node from being re-added until it restarts.
func (g *gossip) tombstone(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tombstones[name] = g.peers[name].meta.Started
}

// reconnectTargets returns the gossip addresses of members believed dead
// that did not leave on purpose: the ones worth redialling. A member dead for
// longer than timeout is forgotten instead, as Serf's reaper does after its
// reconnect timeout: memberlist itself dropped it long ago (after
// GossipToTheDeadTime), so this view was the last place that remembered it.
// If it returns, its join (or a peer's) announces it afresh.
func (g *gossip) reconnectTargets(timeout time.Duration) (addrs []string, forgotten int) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, p := range g.peers {
		if _, removed := g.tombstones[name]; removed || p.alive || p.meta.Leaving || p.addr == "" {
			continue
		}
		if dead := now.Sub(p.deadSince); dead > timeout {
			delete(g.peers, name)
			forgotten++
			g.log.Info("forgot gossip member after the reconnect timeout", zap.String("member", name),
				zap.Duration("dead_for", dead), zap.Duration("reconnect_timeout", timeout))
			continue
		}
		addrs = append(addrs, p.addr)
	}
	sort.Strings(addrs)
	return addrs, forgotten
}

func (g *gossip) aliveCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, p := range g.peers {
		if p.alive {
			n++
		}
	}
	return n
}

// sortedNames returns the keys of m in order.
func sortedNames(m map[string]peer) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
