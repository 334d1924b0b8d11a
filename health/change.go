package health

import (
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"
)

// Change is a new set of pools, validated and built against the Monitor's
// running set but not in place: until Apply nothing new is checked, offered
// by Monitor.Backend or counted in a metric, and a Change that is dropped
// has changed nothing.
type Change struct {
	m       *Monitor
	base    *monitorState // the running set Prepare compared against
	next    *monitorState
	added   []*Backend              // backends base does not have, in their initial state
	changed map[*Backend]*checkSpec // backends of base whose check differs: the new check
	removed []*Backend              // backends of base that next does not list
	kept    int                     // backends of base whose check is the same
}

// Prepare validates pools as a whole, as NewMonitor does (errors name the
// pool, the backend and the value; certificate files are read), and works
// out what Apply will do, per backend (a pool name and an address):
//
//   - the same check as now (StartHealthy aside, certificate files with the
//     same content): it keeps its Backend, its state and its worker,
//     untouched, so no check runs earlier than it was due;
//   - a different check: it keeps its Backend and whether it is healthy;
//     Apply restarts its worker with the new check, whose results then
//     drive rise and fall (the streak counted by the old check is dropped);
//     a check turned to none makes it healthy;
//   - new: a new Backend in the pool's initial state (StartHealthy, or
//     healthy for none);
//   - no longer listed: Apply stops its worker, waits for it, stops offering
//     it and deletes its metrics.
//
// Nothing changes until Apply.
func (m *Monitor) Prepare(pools []PoolChecks) (*Change, error) {
	c := &Change{
		m:       m,
		base:    m.state.Load(),
		next:    &monitorState{backends: make(map[backendKey]*Backend)},
		changed: make(map[*Backend]*checkSpec),
	}
	seen := make(map[string]bool, len(pools))
	for _, pc := range pools {
		if seen[pc.Pool] {
			return nil, fmt.Errorf("health: pool %q listed twice", pc.Pool)
		}
		seen[pc.Pool] = true
		p, err := c.addPool(pc)
		if err != nil {
			return nil, fmt.Errorf("health: pool %q: %w", pc.Pool, err)
		}
		c.next.pools = append(c.next.pools, p)
	}
	for key, b := range c.base.backends {
		if c.next.backends[key] == nil {
			c.removed = append(c.removed, b)
		}
	}
	return c, nil
}

// addPool builds one pool of the change, reusing the running Backends.
func (c *Change) addPool(pc PoolChecks) (*pool, error) {
	chk := pc.Check
	if err := chk.validate(); err != nil {
		return nil, err
	}
	var tlsBase *tls.Config
	var tlsFiles [sha256.Size]byte
	if chk.Kind == KindHTTPS {
		var err error
		if tlsBase, tlsFiles, err = loadTLS(chk); err != nil {
			return nil, err
		}
	}
	p := &pool{name: pc.Pool, kind: chk.Kind, perVIP: pc.PerVIP}
	for _, addr := range pc.Backends {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("backend %q: %w", addr, err)
		}
		key := backendKey{pc.Pool, addr}
		if c.next.backends[key] != nil {
			return nil, fmt.Errorf("backend %q listed twice", addr)
		}
		b := c.base.backends[key]
		if b != nil && b.spec.Load().sameAs(chk, tlsFiles) {
			c.kept++
		} else {
			pr, err := newProber(chk, addr, c.m.dial, tlsBase)
			if err != nil {
				return nil, fmt.Errorf("backend %q: %w", addr, err)
			}
			spec := &checkSpec{check: chk, tlsFiles: tlsFiles, prober: pr}
			if b == nil {
				b = newBackend(pc.Pool, addr, spec)
				c.added = append(c.added, b)
			} else {
				c.changed[b] = spec
			}
		}
		c.next.backends[key] = b
		p.backends = append(p.backends, b)
	}
	return p, nil
}

// newBackend is a backend in its pool's initial state.
func newBackend(pool, addr string, spec *checkSpec) *Backend {
	chk := spec.check
	b := &Backend{pool: pool, addr: addr,
		sm: machine{rise: chk.Rise, fall: chk.Fall, healthy: chk.Kind == KindNone || chk.StartHealthy}}
	b.spec.Store(spec)
	b.healthy.Store(b.sm.healthy)
	return b
}

// Backend returns the record of one backend of the change's pools: the
// running one for a backend that stays, a new one for a backend the change
// adds. The balancer may be given it before Apply; a new one stays in its
// initial state, unchecked, until Apply. The error names what is unknown.
func (c *Change) Backend(pool, addr string) (*Backend, error) {
	return c.next.backend(pool, addr)
}

// Apply puts the change in place, as Prepare describes, and sends the new
// Summary on SummaryChanges if it differs. It fails, changing nothing, when
// another Apply came between Prepare and this one (the change was worked out
// against pools no longer running), which includes applying it twice.
func (c *Change) Apply() error {
	m := c.m
	m.mu.Lock()
	if m.state.Load() != c.base {
		m.mu.Unlock()
		return errors.New("health: the running checks changed since this change was prepared")
	}
	m.applyLocked(c)
	m.mu.Unlock()
	m.publishSummary()
	return nil
}

// applyLocked swaps c in. Workers of backends removed or re-checked stop
// (and are waited for) before the new set is published, so no backend ever
// has two; m.mu must be held.
func (m *Monitor) applyLocked(c *Change) {
	for _, b := range c.removed {
		m.stopLocked(b)
	}
	for b := range c.changed {
		m.stopLocked(b)
	}
	for _, b := range c.added {
		b.metrics = m.met.forBackend(b.pool, b.addr)
		b.metrics.up.Set(boolFloat(b.sm.healthy))
	}
	m.state.Store(c.next)
	for _, b := range c.removed {
		m.met.deleteBackend(b.pool, b.addr)
	}
	for b, spec := range c.changed {
		m.recheck(b, spec)
		m.startLocked(b)
	}
	for _, b := range c.added {
		m.startLocked(b)
	}
	if len(c.added)+len(c.changed)+len(c.removed) > 0 {
		m.log.Info("health checks reconfigured", zap.Int("pools", len(c.next.pools)), zap.Int("kept", c.kept),
			zap.Int("added", len(c.added)), zap.Int("changed", len(c.changed)), zap.Int("removed", len(c.removed)))
	}
}

// recheck gives b its new check. Its healthy state stays, so the balancer
// sees no flap; the streak counted by the old check is dropped. A check of
// kind none has no way to bring a backend back, so it makes b healthy.
func (m *Monitor) recheck(b *Backend, spec *checkSpec) {
	b.mu.Lock()
	b.spec.Store(spec)
	b.sm.rise, b.sm.fall = spec.check.Rise, spec.check.Fall
	b.sm.successes, b.sm.failures = 0, 0
	b.failing.Store(false)
	if spec.prober == nil && !b.sm.healthy {
		b.sm.healthy = true
		m.announceLocked(b, ReasonOK, nil)
		return
	}
	b.mu.Unlock()
}

func boolFloat(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
