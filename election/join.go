package election

import (
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/zap"
)

// joinRetryMax caps the wait between gossip join attempts.
const joinRetryMax = 2 * time.Second

// joinLoop joins gossip through the seeds (retrying until one answers, ctx
// ends or Shutdown) and runs the bootstrap_expect protocol until this node
// has Raft state.
func (n *Node) joinLoop(ctx context.Context, rt *running) {
	defer n.wg.Done()
	seeds := n.seeds()
	joined := len(seeds) == 0
	boot := bootstrapper{}
	wait := 100 * time.Millisecond
	for {
		if !joined {
			// Contacting only ourselves (a seed naming this node in another
			// form) is not a join.
			if c, err := rt.ml.Join(seeds); c > 0 && rt.ml.NumMembers() > 1 {
				joined = true
				n.log.Info("joined gossip", zap.Int("contacted", c), zap.Strings("seeds", seeds))
			} else {
				n.log.Debug("gossip join failed; retrying", zap.Strings("seeds", seeds), zap.Error(err))
				wait = min(2*wait, joinRetryMax)
			}
		}
		done := n.opts.BootstrapExpect == 0 || n.clustered.Load() || n.maybeBootstrap(rt, &boot)
		if joined && done {
			return
		}
		step := wait
		if joined {
			step = 100 * time.Millisecond // only bootstrap is left: watch gossip closely
		}
		select {
		case <-ctx.Done():
			return
		case <-n.stop:
			return
		case <-time.After(step):
		}
	}
}

// seeds are the join addresses other than this node's own gossip address.
func (n *Node) seeds() []string {
	var out []string
	for _, s := range n.opts.Join {
		if s == n.opts.GossipBind {
			continue
		}
		if a, err := net.ResolveUDPAddr("udp", s); err == nil && a.String() == n.opts.GossipBind {
			continue
		}
		out = append(out, s)
	}
	return out
}

// bootstrapSettle is how long the set of seen servers must stay the same
// before the lowest-named node bootstraps: gossip views converge first.
const bootstrapSettle = 500 * time.Millisecond

type bootstrapper struct {
	seen  string // sorted names of the last view
	since time.Time
}

// maybeBootstrap reports true once bootstrap is settled for this node: it
// bootstrapped, or someone already has Raft state. It bootstraps only when
// BootstrapExpect servers are seen, the view is stable, nobody gossips
// existing Raft state, and this node has the lowest name.
func (n *Node) maybeBootstrap(rt *running, b *bootstrapper) bool {
	var names []string
	servers := raft.Configuration{}
	peers := n.gossip.snapshot()
	for _, name := range sortedNames(peers) {
		p := peers[name]
		if !p.alive || p.meta.Leaving {
			continue
		}
		if p.meta.Clustered {
			n.log.Info("a cluster exists; waiting to be added", zap.String("seen", name))
			return true
		}
		names = append(names, name)
		servers.Servers = append(servers.Servers, raft.Server{
			ID: raft.ServerID(name), Address: raft.ServerAddress(p.meta.RaftAddr), Suffrage: raft.Voter,
		})
	}
	if len(names) < n.opts.BootstrapExpect {
		b.seen = ""
		return false
	}
	if key := strings.Join(names, ","); key != b.seen {
		b.seen, b.since = key, time.Now()
		return false
	}
	if time.Since(b.since) < bootstrapSettle || names[0] != n.opts.NodeName {
		return false
	}
	if err := rt.raft.BootstrapCluster(servers).Error(); err != nil {
		n.log.Warn("bootstrap skipped", zap.Error(err))
		return true
	}
	n.formed.Store(true)
	n.clustered.Store(true)
	n.pokeMeta()
	n.log.Info("bootstrapped raft cluster", zap.Strings("servers", names))
	return true
}

// reconnectLoop periodically pushes state to members gossip believes dead.
// memberlist never probes a dead member again, so after a partition longer
// than its suspicion timeout each side would keep the other dead until a
// restart (Serf's reconnector solves the same problem). One exchange is
// enough: the returning node hears it was declared dead and refutes it.
// After ReconnectTimeout a dead member is forgotten and no longer dialled.
func (n *Node) reconnectLoop(rt *running) {
	defer n.wg.Done()
	every := ioTimeout(n.opts.Timing) // 1 s on lan, longer on slower profiles
	for {
		select {
		case <-n.stop:
			return
		case <-time.After(every):
		}
		addrs, forgotten := n.gossip.reconnectTargets(n.opts.ReconnectTimeout)
		n.metrics.forgotten.Add(float64(forgotten))
		n.reconnect(rt, addrs)
	}
}

// reconnect tries every address at once, so one blackholed member delays
// neither the others nor Shutdown by more than one gossip TCP timeout.
func (n *Node) reconnect(rt *running, addrs []string) {
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Go(func() {
			if _, err := rt.ml.Join([]string{a}); err != nil {
				n.log.Debug("gossip reconnect failed", zap.String("addr", a), zap.Error(err))
				return
			}
			n.metrics.reconnects.Inc()
			n.log.Info("gossip reconnected to a member believed dead", zap.String("addr", a))
		})
	}
	wg.Wait()
}
