// Package balancer is vipd's L4 TCP proxy: frontends (listeners) that accept
// client connections and relay them to a backend of a pool chosen by a load
// balancing algorithm.
//
// The relay keeps both sockets bare *net.TCPConn so io.Copy uses splice(2);
// counters are atomics and the backend pick is lock-free or briefly locked,
// so no per-connection work is funnelled through a shared goroutine.
package balancer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Health is the health checker's record of one backend (health.Backend
// implements it). The balancer keeps no copy: it asks at every pick, so
// what the proxy does and what /status and fitness report cannot disagree.
// Reconfigure compares records with == to tell a backend whose record
// changed from one that kept it, so implementations are pointers.
type Health interface {
	// Healthy reports whether the backend may take new connections. It is
	// called on every pick and must be cheap: no lock, no lookup.
	Healthy() bool
	// HealthySince is when the backend last turned healthy, the zero Time
	// when it has been healthy from the start. Read only with slow start.
	HealthySince() time.Time
}

// BackendConfig is one backend server of a pool.
type BackendConfig struct {
	Address string // host:port
	Weight  int    // >= 1
	Health  Health // required
}

// PoolConfig describes a pool of backends and how connections are spread
// over them. Every value is required unless it says what zero means: the
// defaults belong to the config package.
type PoolConfig struct {
	Name           string
	Algorithm      string        // round_robin | least_conn | random2 | source_hash
	ConnectTimeout time.Duration // > 0
	ProxyProtocol  string        // none | v1 | v2
	SlowStart      time.Duration // 0 = off
	Backends       []BackendConfig
}

// FrontendConfig describes one listener and the pool it feeds.
type FrontendConfig struct {
	Name           string
	Listen         string
	Pool           string
	MaxConnections int           // 0 = unlimited
	IdleTimeout    time.Duration // 0 = never
	// MaxConnectionsPerSource caps the live connections of one client IP
	// (the PROXY header's source on an AcceptProxy frontend); 0 = unlimited.
	MaxConnectionsPerSource int
	AcceptProxy             *AcceptProxyConfig // nil = no PROXY header taken
}

// ConnectReporter receives the proxy's own connect outcomes (passive health).
type ConnectReporter interface {
	ConnectFailed(pool, backend string)
	ConnectSucceeded(pool, backend string)
}

// Options configure a Balancer. Reconfigure takes Frontends and Pools
// anew; Logger, Registerer and Reporter are New's for the Balancer's life.
type Options struct {
	Frontends  []FrontendConfig
	Pools      []PoolConfig
	Logger     *zap.Logger           // nil = no logs
	Registerer prometheus.Registerer // nil = metrics are not registered
	Reporter   ConnectReporter       // nil = outcomes are not reported
}

// PoolStatus is a pool's state as shown by the admin API.
type PoolStatus struct {
	Name     string          `json:"name"`
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is a backend's state as shown by the admin API.
type BackendStatus struct {
	Address           string `json:"address"`
	Healthy           bool   `json:"healthy"`
	Drained           bool   `json:"drained"`
	Weight            int    `json:"weight"`
	ActiveConnections int64  `json:"active_connections"`
	TotalConnections  uint64 `json:"total_connections"`
	// Bytes relayed each way, as in vipd_backend_bytes_total: connections
	// still open count what their peers acknowledged so far.
	BytesClientToBackend uint64 `json:"bytes_client_to_backend"`
	BytesBackendToClient uint64 `json:"bytes_backend_to_client"`
}

// Balancer owns the frontends, the pools and every connection goroutine.
type Balancer struct {
	log      *zap.Logger
	reporter ConnectReporter
	metrics  *metrics

	// layout is the running configuration, replaced whole by Reconfigure:
	// Status, SetDrained and the metrics read it without a lock.
	layout atomic.Pointer[layout]

	// stopAccept is closed when Shutdown begins: accept loops' backoff
	// sleeps end.
	stopAccept chan struct{}
	// hardCtx is cancelled when the shutdown grace runs out: pending dials
	// end. live holds the relaying pairs, cut at the same moment.
	hardCtx    context.Context
	hardCancel context.CancelFunc
	live       liveSet
	parker     parker // idle directions' wait (park.go), stopped once every connection has ended

	// afterFunc arms retirement timers (afterFunc; tests fire them by hand).
	afterFunc func(time.Duration, func()) stopper

	acceptWG sync.WaitGroup // accept loops
	connWG   sync.WaitGroup // connection goroutines
	retireWG sync.WaitGroup // retirement timers armed and not yet ended

	// mu serializes Start, Reconfigure and Shutdown: binding, swapping
	// layouts, retiring.
	mu       sync.Mutex
	started  bool                     // guarded by mu
	stopping bool                     // guarded by mu
	drained  chan struct{}            // guarded by mu; closed when the last goroutine has ended
	retiring map[*retirement]struct{} // guarded by mu: grace periods of removed frontends and backends still running
}

// New validates opts and builds a Balancer. Nothing is bound until Start.
func New(opts Options) (*Balancer, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	b := &Balancer{
		log:        log.Named("balancer"),
		reporter:   opts.Reporter,
		metrics:    newMetrics(),
		stopAccept: make(chan struct{}),
		afterFunc:  afterFunc,
		retiring:   make(map[*retirement]struct{}),
	}
	b.hardCtx, b.hardCancel = context.WithCancel(context.Background())
	empty := &layout{poolByName: map[string]*pool{}}
	b.layout.Store(empty)
	next, err := b.build(opts.Frontends, opts.Pools, empty)
	if err != nil {
		return nil, err
	}
	b.commitLocked(empty, next) // nothing runs yet: no lock needed, nothing to retire
	b.metrics.layout, b.metrics.live = &b.layout, &b.live
	if opts.Registerer != nil {
		if err := b.metrics.register(opts.Registerer); err != nil {
			return nil, fmt.Errorf("register balancer metrics: %w", err)
		}
	}
	return b, nil
}

// Start binds every listener (IP_FREEBIND, SO_REUSEADDR, MPTCP off) and starts
// serving. If one listener cannot be bound, those already bound are closed.
func (b *Balancer) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return errors.New("balancer: already started")
	}
	if b.stopping {
		return errors.New("balancer: shut down")
	}
	l := b.layout.Load()
	if err := bindNew(l.frontends); err != nil {
		return err
	}
	b.started = true
	for _, f := range l.frontends {
		b.serveLocked(f)
	}
	return nil
}

// serveLocked starts f's accept loop; b.mu must be held.
func (b *Balancer) serveLocked(f *frontend) {
	b.acceptWG.Go(f.serve)
	b.log.Info("frontend listening", zap.String("frontend", f.name),
		zap.Stringer("addr", f.ln.Addr()), zap.String("pool", f.route.Load().pool.name))
}

// Addr returns the bound address of a frontend, or nil when the frontend is
// unknown or not started.
func (b *Balancer) Addr(frontend string) net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.layout.Load().frontends {
		if f.name == frontend && f.ln != nil {
			return f.ln.Addr()
		}
	}
	return nil
}

// Shutdown stops accepting, lets live connections finish until ctx is done,
// then closes those left. It waits for every goroutine the Balancer started
// and is safe to call more than once. It returns ctx's error when
// connections had to be cut. Connections still in a reload's grace (of a
// removed frontend or backend) get ctx's instead.
func (b *Balancer) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if !b.stopping {
		b.stopping = true
		close(b.stopAccept)
		for _, f := range b.layout.Load().frontends {
			if f.ln != nil {
				_ = f.ln.Close()
			}
		}
		for r := range b.retiring {
			if r.timer.Stop() {
				b.retireWG.Done()
			}
		}
		clear(b.retiring)
		b.drained = make(chan struct{})
		go func() { // ends once every connection has, which hardCancel guarantees
			b.acceptWG.Wait()
			b.connWG.Wait()
			close(b.drained)
		}()
	}
	drained := b.drained
	b.mu.Unlock()

	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		if n := b.live.count(); n > 0 {
			err = fmt.Errorf("balancer shutdown: closing %d live connections: %w", n, ctx.Err())
			b.log.Warn("shutdown grace over, closing live connections", zap.Int("connections", n))
		}
	}
	b.hardCancel()
	b.live.cutAll()
	<-drained
	b.retireWG.Wait() // a retirement that fired meanwhile
	b.parker.stop()
	return err
}

// SetDrained marks a backend drained or not. A drained backend gets no new
// connections; live ones continue until they end. The mark stays through
// Reconfigure for as long as the pool lists the backend.
func (b *Balancer) SetDrained(pool, backend string, drained bool) error {
	be, err := b.layout.Load().backend(pool, backend)
	if err != nil {
		return err
	}
	if be.drained.Swap(drained) != drained {
		b.log.Info("backend drain changed", zap.String("pool", pool),
			zap.String("backend", backend), zap.Bool("drained", drained))
	}
	return nil
}

// Status reports every pool and backend in configuration order.
func (b *Balancer) Status() []PoolStatus {
	pools := b.layout.Load().pools
	out := make([]PoolStatus, 0, len(pools))
	relayed := b.live.relayed(pools)
	for _, p := range pools {
		ps := PoolStatus{Name: p.name, Backends: make([]BackendStatus, 0, len(p.backends))}
		for _, be := range p.backends {
			ps.Backends = append(ps.Backends, BackendStatus{
				Address:           be.addr,
				Healthy:           be.health.Healthy(),
				Drained:           be.drained.Load(),
				Weight:            be.weight,
				ActiveConnections: be.active.Load(),
				TotalConnections:  be.total.Load(),

				BytesClientToBackend: relayed[be.backendState].up,
				BytesBackendToClient: relayed[be.backendState].down,
			})
		}
		out = append(out, ps)
	}
	return out
}
