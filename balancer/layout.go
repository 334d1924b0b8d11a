package balancer

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
)

// layout is one configuration of the balancer: its frontends and pools in
// config order, and the route each frontend takes with it. It is never
// changed once published; Reconfigure publishes a new one.
type layout struct {
	frontends  []*frontend
	routes     []*route // routes[i] is frontends[i]'s
	pools      []*pool
	poolByName map[string]*pool
}

func (l *layout) backend(pool, addr string) (*backend, error) {
	p, ok := l.poolByName[pool]
	if !ok {
		return nil, fmt.Errorf("unknown pool %q", pool)
	}
	be := p.backend(addr)
	if be == nil {
		return nil, fmt.Errorf("pool %q: unknown backend %q", pool, addr)
	}
	return be, nil
}

// build validates frontends and pools as a whole and builds the layout that
// would replace cur. It changes nothing: a pool whose config is the same
// keeps its running version (and its round robin position), a backend its
// pool lists again keeps its state, a frontend with the same name and
// listen address is cur's own (still bound, still accepting); everything
// else is new and unbound.
func (b *Balancer) build(frontends []FrontendConfig, pools []PoolConfig, cur *layout) (*layout, error) {
	next := &layout{poolByName: make(map[string]*pool, len(pools))}
	for _, pc := range pools {
		if _, dup := next.poolByName[pc.Name]; dup {
			return nil, fmt.Errorf("pool %q: defined twice", pc.Name)
		}
		p := cur.poolByName[pc.Name]
		if p == nil || !p.sameConfig(pc) {
			var err error
			if p, err = newPool(pc, p); err != nil {
				return nil, err
			}
		}
		next.pools = append(next.pools, p)
		next.poolByName[pc.Name] = p
	}
	running := make(map[string]*frontend, len(cur.frontends))
	for _, f := range cur.frontends {
		running[f.name] = f
	}
	seen := make(map[string]bool, len(frontends))
	for _, fc := range frontends {
		if seen[fc.Name] {
			return nil, fmt.Errorf("frontend %q: defined twice", fc.Name)
		}
		seen[fc.Name] = true
		p, ok := next.poolByName[fc.Pool]
		if !ok {
			return nil, fmt.Errorf("frontend %q: unknown pool %q", fc.Name, fc.Pool)
		}
		if fc.MaxConnections < 0 || fc.IdleTimeout < 0 {
			return nil, fmt.Errorf("frontend %q: max_connections %d and idle_timeout %s must not be negative",
				fc.Name, fc.MaxConnections, fc.IdleTimeout)
		}
		if fc.MaxConnectionsPerSource < 0 {
			return nil, fmt.Errorf("frontend %q: max_connections_per_source %d must not be negative", fc.Name, fc.MaxConnectionsPerSource)
		}
		if ap := fc.AcceptProxy; ap != nil && (len(ap.From) == 0 || ap.Timeout <= 0) {
			return nil, fmt.Errorf("frontend %q: accept_proxy needs sources (from %v) and a timeout > 0 (%s)", fc.Name, ap.From, ap.Timeout)
		}
		f := running[fc.Name]
		if f == nil || f.listen != fc.Listen {
			f = newFrontend(b, fc.Name, fc.Listen)
		}
		next.frontends = append(next.frontends, f)
		next.routes = append(next.routes, &route{pool: p, maxConnections: int64(fc.MaxConnections),
			perSource: int64(fc.MaxConnectionsPerSource), idleTimeout: fc.IdleTimeout, acceptProxy: cloneAcceptProxy(fc.AcceptProxy)})
	}
	return next, nil
}

// cloneAcceptProxy copies ap, so a caller's later change to its slice
// cannot reach a running route.
func cloneAcceptProxy(ap *AcceptProxyConfig) *AcceptProxyConfig {
	if ap == nil {
		return nil
	}
	return &AcceptProxyConfig{From: slices.Clone(ap.From), Timeout: ap.Timeout}
}

// bindNew binds the frontends that have no listener yet. If one cannot be
// bound, those it bound are closed again and unset.
func bindNew(frontends []*frontend) error {
	var bound []*frontend
	for _, f := range frontends {
		if f.ln != nil {
			continue
		}
		if err := f.bind(); err != nil {
			for _, g := range bound {
				_ = g.ln.Close()
				g.ln = nil
			}
			return err
		}
		bound = append(bound, f)
	}
	return nil
}

// retired is what a new layout no longer has.
type retired struct {
	frontends []*frontend
	backends  []*backendState
}

// commitLocked publishes next in place of cur and returns what cur had
// that next has not. New backend states get their connect time series and
// every frontend its new route before anything can use them; the series of
// removed backends are deleted. b.mu must be held (or, in New, nothing be
// running yet).
func (b *Balancer) commitLocked(cur, next *layout) retired {
	kept := make(map[*backendState]bool)
	for _, p := range next.pools {
		for _, be := range p.backends {
			kept[be.backendState] = true
			if be.connectTime == nil {
				be.connectTime = b.metrics.connectTime.WithLabelValues(p.name, be.addr)
			}
		}
	}
	for i, f := range next.frontends {
		f.route.Store(next.routes[i])
	}
	b.layout.Store(next)

	var gone retired
	for _, p := range cur.pools {
		for _, be := range p.backends {
			if !kept[be.backendState] {
				gone.backends = append(gone.backends, be.backendState)
				b.metrics.connectTime.DeleteLabelValues(p.name, be.addr)
			}
		}
	}
	stays := make(map[*frontend]bool, len(next.frontends))
	for _, f := range next.frontends {
		stays[f] = true
	}
	for _, f := range cur.frontends {
		if !stays[f] {
			gone.frontends = append(gone.frontends, f)
		}
	}
	return gone
}

// Reconfigure makes opts.Frontends and opts.Pools the running configuration
// (opts' Logger, Registerer and Reporter are ignored: New's stay). The
// whole set is validated first, as New does, and new listeners are bound
// before anything changes: on any error nothing has changed. Then only
// what differs changes:
//
//   - A frontend with the same name and listen address keeps its listener,
//     its accept loop, its counters and its per-source counts; its pool,
//     max_connections, max_connections_per_source, accept_proxy and
//     idle_timeout apply to the connections it accepts from now on. Any
//     other frontend is new: bound (while started) and served. A frontend
//     whose listen address changed is removed and added.
//   - A pool whose config is the same keeps its running version. A changed
//     one (algorithm, connect_timeout, proxy_protocol, slow_start, backends,
//     weights, Health records) is replaced whole, so each connection picks
//     and retries within one version; connections already relaying keep
//     their backend.
//   - A backend (pool name and address) that stays keeps its drain mark
//     and counters. A new one starts with none.
//   - A removed frontend stops accepting at once (its listener is closed).
//     Connections of removed frontends and to removed backends go on for
//     grace, as on a drain, and are then closed; Shutdown stops waiting for
//     a grace still running and gives them its own instead.
//
// Series of removed frontends, pools and backends leave the metrics.
func (b *Balancer) Reconfigure(opts Options, grace time.Duration) error {
	if grace < 0 {
		return fmt.Errorf("balancer reconfigure: grace %s must not be negative", grace)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping {
		return errors.New("balancer: shut down")
	}
	cur := b.layout.Load()
	next, err := b.build(opts.Frontends, opts.Pools, cur)
	if err != nil {
		return err
	}
	if b.started {
		if err := bindNew(next.frontends); err != nil {
			return err
		}
	}
	running := make(map[*frontend]bool, len(cur.frontends))
	for _, f := range cur.frontends {
		running[f] = true
	}
	gone := b.commitLocked(cur, next)
	added := 0
	for _, f := range next.frontends {
		if !running[f] {
			added++
			if b.started {
				b.serveLocked(f)
			}
		}
	}
	for _, f := range gone.frontends {
		if f.ln != nil {
			_ = f.ln.Close()
		}
	}
	if len(gone.frontends)+len(gone.backends) > 0 {
		b.retireLocked(gone, grace)
	}
	b.log.Info("balancer reconfigured", zap.Int("frontends", len(next.frontends)), zap.Int("frontends_added", added),
		zap.Int("frontends_removed", len(gone.frontends)), zap.Int("pools", len(next.pools)),
		zap.Int("backends_removed", len(gone.backends)), zap.Duration("grace", grace))
	return nil
}

// retirement is the grace period of what one Reconfigure removed.
type retirement struct {
	timer stopper // set under b.mu
}

// stopper is the part of a *time.Timer a retirement keeps.
type stopper interface{ Stop() bool }

// afterFunc is time.AfterFunc behind the stopper interface: the
// Balancer's default clock for retirements.
func afterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }

// retireLocked closes the live connections of gone once grace has passed.
// The timer is the Balancer's: Shutdown stops it or waits for it. b.mu
// must be held.
func (b *Balancer) retireLocked(gone retired, grace time.Duration) {
	r := &retirement{}
	b.retireWG.Add(1)
	r.timer = b.afterFunc(grace, func() {
		defer b.retireWG.Done()
		if n := b.live.retire(gone.frontends, gone.backends); n > 0 {
			b.log.Info("reload grace over, closed connections of removed frontends and backends", zap.Int("connections", n))
		}
		b.mu.Lock()
		delete(b.retiring, r)
		b.mu.Unlock()
	})
	b.retiring[r] = struct{}{}
}
