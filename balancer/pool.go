package balancer

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// weightScale is the effective weight of a backend of weight 1 at full
// strength; the scale leaves room for the slow start ramp in integers.
const weightScale = 1000

// slowStartFloor is the fraction of its weight a backend gets the moment it
// turns healthy (1/slowStartFloor).
const slowStartFloor = 10

// backendState is what a backend keeps across reconfigurations for as long
// as its pool lists it: the operator's drain and the counters. Its
// counters are atomics, so the hot path reads them without locks.
type backendState struct {
	drained atomic.Bool

	active        atomic.Int64
	total         atomic.Uint64
	bytesUp       atomic.Uint64 // client → backend
	bytesDown     atomic.Uint64 // backend → client
	connectErrors atomic.Uint64
	// connectTime is resolved when the state is first published; nil
	// until then, which marks a state no configuration has run with yet.
	connectTime prometheus.Observer

	// retired is set, under the liveSet's mutex, once the backend has been
	// removed and its drain grace is over: its pairs are cut, and a pair
	// that links later (a connect in flight at the time) is closed at once.
	retired bool
}

// backend is one server as one version of its pool has it: what the config
// says (never changed once built) and its state, shared with the same
// address in the pool's earlier and later versions. Whether it is healthy
// is health's to say.
type backend struct {
	addr      string
	weight    int
	slowStart time.Duration
	seed      uint64 // source_hash identity, from the address
	health    Health

	*backendState
}

// available reports whether the backend may take new connections.
func (be *backend) available() bool {
	return !be.drained.Load() && be.health.Healthy()
}

// effWeight is the backend's weight in weightScale units, reduced while it
// ramps up after turning healthy: from weight/10 to weight over slowStart.
func (be *backend) effWeight(now int64) int64 {
	full := int64(be.weight) * weightScale
	if be.slowStart == 0 {
		return full
	}
	since := be.health.HealthySince()
	if since.IsZero() {
		return full
	}
	elapsed := now - since.UnixNano()
	if elapsed >= int64(be.slowStart) {
		return full
	}
	if elapsed < 0 {
		elapsed = 0
	}
	floor := full / slowStartFloor
	return max(1, floor+(full-floor)*elapsed/int64(be.slowStart))
}

// tried marks backends a connection already failed to reach, so each is
// tried at most once. nil means none was tried.
type tried []bool

func (t tried) has(i int) bool { return t != nil && t[i] }

// pool is one version of a set of backends and the algorithm that picks
// among them. It is never changed once built: Reconfigure builds a new
// version of a pool whose config changed and swaps it in whole, so a
// connection picks, and retries, within one consistent version.
type pool struct {
	cfg            PoolConfig // as built from, to tell a changed pool from the same one
	name           string
	connectTimeout time.Duration
	proxyVersion   byte // 0 = none, 1 or 2
	backends       []*backend
	byAddr         map[string]*backend
	algo           algorithm
}

// newPool validates pc and builds a version of its pool. A backend that
// prev (the running version, or nil) lists too keeps its state; the others
// get a new one.
func newPool(pc PoolConfig, prev *pool) (*pool, error) {
	p := &pool{
		cfg:            pc,
		name:           pc.Name,
		connectTimeout: pc.ConnectTimeout,
		byAddr:         make(map[string]*backend, len(pc.Backends)),
	}
	switch pc.ProxyProtocol {
	case "none":
	case "v1":
		p.proxyVersion = 1
	case "v2":
		p.proxyVersion = 2
	default:
		return nil, fmt.Errorf("pool %q: proxy_protocol %q: want none, v1 or v2", pc.Name, pc.ProxyProtocol)
	}
	if pc.ConnectTimeout <= 0 {
		return nil, fmt.Errorf("pool %q: connect_timeout %s: must be greater than zero", pc.Name, pc.ConnectTimeout)
	}
	if pc.SlowStart < 0 {
		return nil, fmt.Errorf("pool %q: slow_start %s: must not be negative", pc.Name, pc.SlowStart)
	}
	for _, bc := range pc.Backends {
		if bc.Weight < 1 {
			return nil, fmt.Errorf("pool %q: backend %q: weight %d: want >= 1", pc.Name, bc.Address, bc.Weight)
		}
		if _, _, err := net.SplitHostPort(bc.Address); err != nil {
			return nil, fmt.Errorf("pool %q: backend %q: %w", pc.Name, bc.Address, err)
		}
		if _, dup := p.byAddr[bc.Address]; dup {
			return nil, fmt.Errorf("pool %q: backend %q: listed twice", pc.Name, bc.Address)
		}
		if bc.Health == nil {
			return nil, fmt.Errorf("pool %q: backend %q: no Health to ask", pc.Name, bc.Address)
		}
		h := fnv.New64a()
		h.Write([]byte(bc.Address))
		be := &backend{
			addr:      bc.Address,
			weight:    bc.Weight,
			slowStart: pc.SlowStart,
			seed:      h.Sum64(),
			health:    bc.Health,
		}
		if old := prev.backend(bc.Address); old != nil {
			be.backendState = old.backendState
		} else {
			be.backendState = &backendState{}
		}
		p.backends = append(p.backends, be)
		p.byAddr[bc.Address] = be
	}
	algo, err := newAlgorithm(pc.Algorithm, len(p.backends))
	if err != nil {
		return nil, fmt.Errorf("pool %q: %w", pc.Name, err)
	}
	p.algo = algo
	return p, nil
}

// backend returns the backend at addr, nil when there is none or p is nil.
func (p *pool) backend(addr string) *backend {
	if p == nil {
		return nil
	}
	return p.byAddr[addr]
}

// sameConfig reports whether pc would build this version again: the same
// settings and the same backends, in order, with the same weights and the
// same Health records (compared with ==).
func (p *pool) sameConfig(pc PoolConfig) bool {
	a, b := p.cfg, pc
	if !slices.Equal(a.Backends, b.Backends) {
		return false
	}
	a.Backends, b.Backends = nil, nil
	return reflect.DeepEqual(a, b)
}

// pick chooses an available backend not yet tried, or -1 when none is left.
// key is the client's source hash (used by source_hash only).
func (p *pool) pick(key uint64, t tried) int {
	return p.algo.pick(p.backends, time.Now().UnixNano(), key, t)
}

// algorithm picks the index of a backend among bs: available, not in t.
// It returns -1 when there is none.
type algorithm interface {
	pick(bs []*backend, now int64, key uint64, t tried) int
}

func newAlgorithm(name string, n int) (algorithm, error) {
	switch name {
	case "round_robin":
		return &roundRobin{current: make([]int64, n)}, nil
	case "least_conn":
		return &leastConn{}, nil
	case "random2":
		return random2{}, nil
	case "source_hash":
		return sourceHash{}, nil
	}
	return nil, fmt.Errorf("algorithm %q: want round_robin, least_conn, random2 or source_hash", name)
}

// roundRobin is nginx's smooth weighted round robin: every pick adds each
// candidate's weight to its current value, takes the largest and subtracts
// the total from it. Weights 5,1,1 give a a b a c a a.
type roundRobin struct {
	mu      sync.Mutex
	current []int64 // guarded by mu; one per backend
}

func (r *roundRobin) pick(bs []*backend, now int64, _ uint64, t tried) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	best, total := -1, int64(0)
	for i, be := range bs {
		if t.has(i) || !be.available() {
			continue
		}
		w := be.effWeight(now)
		r.current[i] += w
		total += w
		if best < 0 || r.current[i] > r.current[best] {
			best = i
		}
	}
	if best >= 0 {
		r.current[best] -= total
	}
	return best
}

// leastConn picks the backend with the fewest active connections per unit
// of weight, (active+1)/weight, so idle heavy backends fill first. Ties go
// to the next backend after a rotating start so equal backends share.
type leastConn struct {
	next atomic.Uint64
}

func (l *leastConn) pick(bs []*backend, now int64, _ uint64, t tried) int {
	n := len(bs)
	if n == 0 {
		return -1
	}
	start := int(l.next.Add(1) % uint64(n))
	best, bestLoad, bestW := -1, int64(0), int64(0)
	for j := range n {
		i := (start + j) % n
		be := bs[i]
		if t.has(i) || !be.available() {
			continue
		}
		load, w := be.active.Load()+1, be.effWeight(now)
		if best < 0 || load*bestW < bestLoad*w {
			best, bestLoad, bestW = i, load, w
		}
	}
	return best
}

// random2 is the power of two choices: two backends drawn at random in
// proportion to their weight, and the one with fewer active connections per
// unit of weight wins.
type random2 struct{}

func (random2) pick(bs []*backend, now int64, _ uint64, t tried) int {
	var total int64
	for i, be := range bs {
		if !t.has(i) && be.available() {
			total += be.effWeight(now)
		}
	}
	if total == 0 {
		return -1
	}
	a := weightedDraw(bs, now, t, rand.Int64N(total))
	b := weightedDraw(bs, now, t, rand.Int64N(total))
	if a < 0 || b < 0 { // a backend changed state between the passes
		return max(a, b)
	}
	la, wa := bs[a].active.Load()+1, bs[a].effWeight(now)
	lb, wb := bs[b].active.Load()+1, bs[b].effWeight(now)
	if lb*wa < la*wb {
		return b
	}
	return a
}

// weightedDraw returns the candidate whose weight interval holds r.
func weightedDraw(bs []*backend, now int64, t tried, r int64) int {
	last := -1
	for i, be := range bs {
		if t.has(i) || !be.available() {
			continue
		}
		last = i
		r -= be.effWeight(now)
		if r < 0 {
			return i
		}
	}
	return last
}

// sourceHash is weighted rendezvous (highest random weight) hashing on the
// client address: each backend scores -weight/ln(u) with u a hash of client
// and backend, and the top score wins. Adding or removing a backend moves
// only the clients that gain or lose it, about 1/N of them. The hash is
// deterministic, so every node of the cluster maps a client the same way.
type sourceHash struct{}

func (sourceHash) pick(bs []*backend, now int64, key uint64, t tried) int {
	best, bestScore := -1, 0.0
	for i, be := range bs {
		if t.has(i) || !be.available() {
			continue
		}
		s := hrwScore(key, be.seed, be.effWeight(now))
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
