package election

import (
	"encoding/json"
	"sort"
	"sync"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// maxNameLen bounds node names so metadata always fits memberlist's limit.
const maxNameLen = 128

// meta is what a node gossips about itself. Short keys keep it far below
// memberlist.MetaMaxSize (512 bytes); New checks the worst case.
type meta struct {
	RaftAddr  string `json:"r"`
	Role      Role   `json:"o"`
	Admin     string `json:"a,omitempty"`
	Pools     int    `json:"p"`
	Healthy   int    `json:"h"`
	LinkUp    bool   `json:"l"`
	Leaving   bool   `json:"x,omitempty"` // set before a deliberate Leave
	Clustered bool   `json:"c,omitempty"` // has Raft state: nobody may bootstrap beside it
	Started   int64  `json:"s"`           // start time: a restart changes the metadata
	Config    string `json:"d,omitempty"` // the digest of the config the node runs
}

func (m meta) fitness() Fitness {
	return Fitness{Pools: m.Pools, HealthyPools: m.Healthy, LinkUp: m.LinkUp}
}

// fit reports whether this peer may take leadership for being healthy. A
// witness never reports itself fit.
func (m meta) fit() bool { return m.Role == RoleVoter && m.fitness().Fit() }

// peer is the last thing gossip told us about a node.
type peer struct {
	meta  meta
	alive bool
	addr  string // gossip address, for reconnecting after a partition
}

// gossip keeps the cluster view built from memberlist events. memberlist
// calls it from its own goroutines; it only updates the map and pokes the
// node, never blocks.
type gossip struct {
	log   *zap.Logger
	local func() meta // this node's metadata, read when memberlist asks
	poke  func()      // something changed: the leader should reconcile

	mu         sync.Mutex
	peers      map[string]peer
	tombstones map[string]int64 // removed by an operator: name -> Started at removal
}

var (
	_ memberlist.Delegate      = (*gossip)(nil)
	_ memberlist.EventDelegate = (*gossip)(nil)
)

func newGossip(log *zap.Logger, local func() meta, poke func()) *gossip {
	return &gossip{log: log, local: local, poke: poke, peers: map[string]peer{}, tombstones: map[string]int64{}}
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
	g.peers[n.Name] = peer{meta: m, alive: alive, addr: n.Address()}
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

// lost returns the gossip addresses of members believed dead that did not
// leave on purpose: the ones worth reconnecting to.
func (g *gossip) lost() []string {
	var out []string
	for _, p := range g.snapshot() {
		if !p.alive && !p.meta.Leaving && p.addr != "" {
			out = append(out, p.addr)
		}
	}
	sort.Strings(out)
	return out
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
