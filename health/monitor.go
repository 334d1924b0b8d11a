package health

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Monitor checks every backend of its pools and tracks their health. Its
// set of pools can be replaced while it runs (Prepare, then Change.Apply).
type Monitor struct {
	log   *zap.Logger
	clock clock
	dial  dialFunc
	met   *metrics
	// afterCheck, when set (tests only), runs after each active check has
	// been recorded, on the worker's goroutine.
	afterCheck func(b *Backend, reason string)
	// onTransition, when set (tests only), sees every state change, in
	// order per backend, on the goroutine that observed it.
	onTransition func(transition)

	// state is the running set of pools, replaced whole by Apply, so the
	// proxy's reports (ConnectFailed) read it with one load and no lock.
	state atomic.Pointer[monitorState]

	// mu serializes Apply with Run's start and end, so every actively
	// checked backend of state has exactly one worker while Run runs.
	mu      sync.Mutex
	ran     bool                 // guarded by mu: Run was called
	runCtx  context.Context      // guarded by mu: Run's context while it runs, else nil
	workers map[*Backend]*worker // guarded by mu

	summaryMu   sync.Mutex
	lastSummary Summary // guarded by summaryMu: the last value sent on summaryCh
	summaryCh   chan Summary
}

// monitorState is one set of pools; never changed once published.
type monitorState struct {
	pools    []*pool
	backends map[backendKey]*Backend
}

type pool struct {
	name     string
	kind     Kind
	perVIP   bool // not in the Summary
	backends []*Backend
}

type backendKey struct{ pool, backend string }

// worker is the goroutine checking one backend, stopped by cancel.
type worker struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned
}

// Backend is one backend's check and state: the only record of whether it
// may take connections. The balancer holds it (from Monitor.Backend or
// Change.Backend) and asks Healthy at every pick, so there is no second
// copy to keep in step. A backend keeps its Backend, and so its state, for
// as long as its pool lists it, across reconfigurations; one removed is
// no longer checked or offered.
type Backend struct {
	pool, addr string
	spec       atomic.Pointer[checkSpec] // how it is checked; replaced by Apply when the pool's check changes
	metrics    backendMetrics            // resolved by Apply before any worker or report can use it

	healthy atomic.Bool  // mirrors sm.healthy for lock-free reads (Healthy, Summary)
	upSince atomic.Int64 // unix nanos of the last unhealthy→healthy transition; 0 = healthy from the start or never up
	failing atomic.Bool  // mirrors sm.failures > 0: ConnectSucceeded's lock-free fast path
	// notifyMu is taken before mu is released on a transition and held while
	// the transition is announced, so logs, metrics and the test hook see
	// one backend's changes in the order they happened without holding mu.
	notifyMu sync.Mutex

	mu         sync.Mutex
	sm         machine   // guarded by mu
	lastReason string    // guarded by mu
	lastError  string    // guarded by mu
	lastCheck  time.Time // guarded by mu
	checks     uint64    // guarded by mu: active checks completed

	recent []StateChange // guarded by mu: the last recentChanges transitions, newest first
}

// checkSpec is how one backend is checked; never changed once built.
type checkSpec struct {
	check    Check
	tlsFiles [sha256.Size]byte // digest of the certificate files read for the check (https)
	prober   prober            // nil for KindNone: no check, always healthy
}

// sameAs reports whether a check built from c with these certificate files
// would be the one s is. StartHealthy is left out: it only decides the
// state of a backend that has none yet.
func (s *checkSpec) sameAs(c Check, tlsFiles [sha256.Size]byte) bool {
	a, b := s.check, c
	a.StartHealthy, b.StartHealthy = false, false
	return reflect.DeepEqual(a, b) && s.tlsFiles == tlsFiles
}

// Healthy reports whether the backend may take new connections. It is one
// atomic load, cheap enough for every pick of the proxy.
func (b *Backend) Healthy() bool { return b.healthy.Load() }

// HealthySince is when the backend last turned healthy; the zero Time when
// it has been healthy since it was added, or has never been. The balancer
// ramps a backend's weight up from this moment (slow start).
func (b *Backend) HealthySince() time.Time {
	if n := b.upSince.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Backend returns the record of one backend of a running pool, for the
// balancer to ask. The error names what is unknown.
func (m *Monitor) Backend(pool, addr string) (*Backend, error) {
	return m.state.Load().backend(pool, addr)
}

func (s *monitorState) backend(pool, addr string) (*Backend, error) {
	if b := s.backends[backendKey{pool, addr}]; b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("health: pool %q has no backend %q", pool, addr)
}

// errPassive is the error logged for a transition caused by ConnectFailed.
var errPassive = errors.New("proxy failed to connect")

// NewMonitor checks that every required value is set, loads CA and client
// certificate files (errors name the file) and registers the metrics.
// Nothing runs until Run.
func NewMonitor(opts Options) (*Monitor, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	met, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	m := &Monitor{
		log:       log.Named("health"),
		clock:     realClock{},
		dial:      dial,
		met:       met,
		workers:   make(map[*Backend]*worker),
		summaryCh: make(chan Summary, 1),
	}
	m.state.Store(&monitorState{backends: map[backendKey]*Backend{}})
	c, err := m.Prepare(opts.Pools)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.applyLocked(c)
	m.mu.Unlock()
	m.lastSummary = m.Summary()
	m.summaryCh <- m.lastSummary
	return m, nil
}

// newProber returns the check for one backend, nil for KindNone.
func newProber(c Check, addr string, dial dialFunc, tlsBase *tls.Config) (prober, error) {
	switch c.Kind {
	case KindNone:
		return nil, nil
	case KindTCP:
		return &tcpProber{addr: addr, dial: dial, timeout: c.Timeout}, nil
	}
	host := c.Host
	if host == "" {
		host = addr
	}
	req, err := buildRequest(c.Path, host)
	if err != nil {
		return nil, err
	}
	p := &httpProber{addr: addr, dial: dial, timeout: c.Timeout, request: req,
		expect: c.ExpectStatus, body: c.ExpectBody, maxBody: MaxBody}
	if tlsBase != nil {
		p.tls = tlsBase.Clone()
		p.tls.ServerName = serverNameFor(c, addr)
	}
	return p, nil
}

// validate rejects a Check the Monitor cannot run. It is a guard against
// wiring mistakes, not the rules of the config file: config supplies every
// value, so a zero here is reported by name rather than replaced.
func (c Check) validate() error {
	switch c.Kind {
	case KindNone:
		return nil // nothing is checked, nothing else is read
	case KindTCP, KindHTTP, KindHTTPS:
	default:
		return fmt.Errorf("check kind %q: want tcp, http, https or none", c.Kind)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Interval", c.Interval}, {"FastInterval", c.FastInterval}, {"Timeout", c.Timeout}} {
		if d.v <= 0 {
			return fmt.Errorf("check %s %s: must be greater than zero", d.name, d.v)
		}
	}
	if c.Rise < 1 || c.Fall < 1 {
		return fmt.Errorf("check Rise %d, Fall %d: each must be at least 1", c.Rise, c.Fall)
	}
	if c.Kind != KindTCP && len(c.ExpectStatus) == 0 {
		return errors.New("check ExpectStatus is empty: no answer could pass")
	}
	return nil
}

// Run checks every actively checked backend, one worker each, including
// those a later Apply adds, and returns when ctx is done and every worker
// has stopped (an in-flight check is aborted). A Monitor runs once; a
// second call returns at once.
func (m *Monitor) Run(ctx context.Context) {
	m.mu.Lock()
	if m.ran {
		m.mu.Unlock()
		m.log.Error("Run called more than once; ignored")
		return
	}
	m.ran, m.runCtx = true, ctx
	st := m.state.Load()
	for _, b := range st.backends {
		m.startLocked(b)
	}
	checked := len(m.workers)
	m.mu.Unlock()
	m.log.Info("health checks started", zap.Int("backends", checked), zap.Int("pools", len(st.pools)))
	<-ctx.Done()
	m.mu.Lock()
	m.runCtx = nil
	for b := range m.workers {
		m.stopLocked(b)
	}
	m.mu.Unlock()
	m.log.Info("health checks stopped")
}

// startLocked starts b's worker while Run runs, unless b has no active
// check. m.mu must be held.
func (m *Monitor) startLocked(b *Backend) {
	spec := b.spec.Load()
	if m.runCtx == nil || spec.prober == nil {
		return
	}
	ctx, cancel := context.WithCancel(m.runCtx)
	w := &worker{cancel: cancel, done: make(chan struct{})}
	m.workers[b] = w
	go func() {
		defer close(w.done)
		m.work(ctx, b, spec)
	}()
}

// stopLocked stops b's worker, if it has one, and waits until it has
// returned: a check in flight is aborted and its outcome dropped. m.mu
// must be held.
func (m *Monitor) stopLocked(b *Backend) {
	w := m.workers[b]
	if w == nil {
		return
	}
	w.cancel()
	<-w.done
	delete(m.workers, b)
}

// work checks one backend with spec until ctx is done. The first check
// comes after a random offset within one interval, the next ones after the
// interval (the fast interval while a change is pending) with ±10% jitter,
// so backends configured together do not fire together. Checks of one
// backend never overlap: the next wait starts when a check ends.
func (m *Monitor) work(ctx context.Context, b *Backend, spec *checkSpec) {
	delay := rand.N(spec.check.Interval)
	for {
		t := m.clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		start := time.Now()
		reason, err := spec.prober.probe(ctx)
		if ctx.Err() != nil {
			return // stopped mid-check: the outcome says nothing about the backend
		}
		b.metrics.duration.Observe(time.Since(start).Seconds())
		if err != nil {
			m.log.Debug("health check failed", zap.String("pool", b.pool), zap.String("backend", b.addr),
				zap.String("reason", reason), zap.Error(err))
		}
		m.observe(b, reason, err, true)
		if m.afterCheck != nil {
			m.afterCheck(b, reason)
		}
		delay = jitter(b.nextInterval(spec.check))
	}
}

// nextInterval is c's fast interval while a change is pending, else its interval.
func (b *Backend) nextInterval(c Check) time.Duration {
	b.mu.Lock()
	changing := b.sm.changing()
	b.mu.Unlock()
	if changing {
		return c.FastInterval
	}
	return c.Interval
}

// jitter spreads d uniformly over [0.9d, 1.1d].
func jitter(d time.Duration) time.Duration {
	spread := d / 5
	return d - d/10 + rand.N(spread+1)
}

// observe applies one outcome (ReasonOK or a failure reason) to b and
// announces a resulting transition. active is false for ConnectFailed.
func (m *Monitor) observe(b *Backend, reason string, err error, active bool) {
	if reason != ReasonOK {
		b.metrics.failures[reason].Inc()
	}
	b.mu.Lock()
	var changed bool
	if reason == ReasonOK {
		changed = b.sm.success()
	} else {
		changed = b.sm.failure()
	}
	b.lastReason = reason
	b.lastError = ""
	if err != nil {
		b.lastError = err.Error()
	}
	if active {
		b.checks++
		b.lastCheck = time.Now()
	}
	b.failing.Store(b.sm.failures > 0)
	if !changed {
		b.mu.Unlock()
		return
	}
	m.announceLocked(b, reason, err)
}

// announceLocked publishes the transition b.sm just made to its current
// state: the lock-free mirrors, then (in order per backend, outside b.mu)
// metrics, log, test hook and summary. b.mu must be held; it is released.
func (m *Monitor) announceLocked(b *Backend, reason string, err error) {
	healthy := b.sm.healthy
	if healthy {
		b.upSince.Store(time.Now().UnixNano())
	}
	b.healthy.Store(healthy)
	change := StateChange{At: time.Now(), Healthy: healthy, Reason: reason}
	b.recent = append([]StateChange{change}, b.recent[:min(len(b.recent), recentChanges-1)]...)
	b.notifyMu.Lock()
	b.mu.Unlock()
	defer b.notifyMu.Unlock()

	if healthy {
		b.metrics.up.Set(1)
		b.metrics.toUp.Inc()
	} else {
		b.metrics.up.Set(0)
		b.metrics.toDown.Inc()
	}
	m.log.Info("backend health changed", zap.String("pool", b.pool), zap.String("backend", b.addr),
		zap.Bool("healthy", healthy), zap.String("reason", reason), zap.Error(err))
	if m.onTransition != nil {
		m.onTransition(transition{Pool: b.pool, Backend: b.addr, Healthy: healthy, Reason: reason})
	}
	m.publishSummary()
}

// ConnectFailed records that the proxy could not connect to a backend: it
// counts as one failed check, so a dead backend leaves rotation after Fall
// failed connects even between active checks. Unknown names and backends
// of KindNone pools (which no active check could bring back) are ignored.
// It is called per proxied connection and does not allocate.
func (m *Monitor) ConnectFailed(pool, backend string) {
	if b := m.state.Load().backends[backendKey{pool, backend}]; b != nil && b.spec.Load().prober != nil {
		m.observe(b, ReasonPassive, errPassive, false)
	}
}

// ConnectSucceeded records that the proxy connected to a backend. It ends a
// failure streak on a healthy backend but never makes an unhealthy one
// healthy: a completed TCP handshake says nothing about the application
// (a wedged server still accepts), so only active checks count toward Rise.
// Unknown names are ignored. It does not allocate.
func (m *Monitor) ConnectSucceeded(pool, backend string) {
	b := m.state.Load().backends[backendKey{pool, backend}]
	if b == nil || !b.failing.Load() || !b.healthy.Load() {
		return // the common case: nothing to reset, no lock taken
	}
	b.mu.Lock()
	b.sm.connectSucceeded()
	b.failing.Store(b.sm.failures > 0)
	b.mu.Unlock()
}

// Summary counts the pools and those with at least one healthy backend,
// leaving out the PerVIP pools.
func (m *Monitor) Summary() Summary {
	var s Summary
	for _, p := range m.state.Load().pools {
		if p.perVIP {
			continue
		}
		s.Pools++
		for _, b := range p.backends {
			if b.healthy.Load() {
				s.HealthyPools++
				break
			}
		}
	}
	return s
}

// SummaryChanges delivers the Summary whenever it changes, latest value
// only: the channel (buffered 1) holds the newest unread Summary, starting
// with the one at NewMonitor; Apply sends one when the pools it puts in
// place change it. It is never closed.
func (m *Monitor) SummaryChanges() <-chan Summary { return m.summaryCh }

// publishSummary replaces the unread value on summaryCh with the current
// Summary if it differs from the last one sent. It never blocks: the lock
// makes this the only sender, so after the drain there is room.
func (m *Monitor) publishSummary() {
	m.summaryMu.Lock()
	defer m.summaryMu.Unlock()
	s := m.Summary()
	if s == m.lastSummary {
		return
	}
	m.lastSummary = s
	select {
	case <-m.summaryCh:
	default:
	}
	select {
	case m.summaryCh <- s:
	default:
	}
}

// recentChanges is how many transitions Status keeps per backend.
const recentChanges = 5

// StateChange is one transition of a backend, as Status reports it.
type StateChange struct {
	At      time.Time `json:"at"`
	Healthy bool      `json:"healthy"`
	Reason  string    `json:"reason"` // ReasonOK for a rise, else the failure that reached Fall
}

// PoolHealth is one pool in Status.
type PoolHealth struct {
	Name     string          `json:"name"`
	Kind     Kind            `json:"kind"`
	Backends []BackendHealth `json:"backends"`
}

// BackendHealth is one backend in Status.
type BackendHealth struct {
	Address              string    `json:"address"`
	Healthy              bool      `json:"healthy"`
	LastReason           string    `json:"last_reason,omitempty"` // of the last check or ConnectFailed
	LastError            string    `json:"last_error,omitempty"`
	LastCheck            time.Time `json:"last_check,omitzero"` // of the last active check
	ConsecutiveSuccesses int       `json:"consecutive_successes"`
	ConsecutiveFailures  int       `json:"consecutive_failures"`
	Checks               uint64    `json:"checks"` // active checks completed

	Transitions []StateChange `json:"transitions"` // the last few, newest first; [] before the first
}

// Status is a snapshot of every pool and backend, for the admin /status.
func (m *Monitor) Status() []PoolHealth {
	pools := m.state.Load().pools
	out := make([]PoolHealth, 0, len(pools))
	for _, p := range pools {
		ph := PoolHealth{Name: p.name, Kind: p.kind, Backends: make([]BackendHealth, 0, len(p.backends))}
		for _, b := range p.backends {
			b.mu.Lock()
			ph.Backends = append(ph.Backends, BackendHealth{
				Address: b.addr, Healthy: b.sm.healthy,
				LastReason: b.lastReason, LastError: b.lastError, LastCheck: b.lastCheck,
				ConsecutiveSuccesses: b.sm.successes, ConsecutiveFailures: b.sm.failures,
				Checks: b.checks, Transitions: append([]StateChange{}, b.recent...),
			})
			b.mu.Unlock()
		}
		out = append(out, ph)
	}
	return out
}
