package balancer

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// testPool builds a pool of healthy backends named by their index.
func testPool(t testing.TB, algo string, slowStart time.Duration, weights ...int) *pool {
	t.Helper()
	pc := poolOf(algo)
	pc.SlowStart = slowStart
	for i, w := range weights {
		pc.Backends = append(pc.Backends, BackendConfig{Address: "127.0.0.1:" + strconv.Itoa(1000+i), Weight: w, Health: healthyFromStart()})
	}
	p, err := newPool(pc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRoundRobinSmoothWeightedSequence(t *testing.T) {
	p := testPool(t, "round_robin", 0, 5, 1, 1)
	var got strings.Builder
	for range 14 {
		got.WriteByte("abc"[p.pick(0, nil)])
	}
	if want := "aabacaa" + "aabacaa"; got.String() != want {
		t.Fatalf("sequence %s, want %s", got.String(), want)
	}
}

func TestRoundRobinSkipsUnavailableAndTried(t *testing.T) {
	p := testPool(t, "round_robin", 0, 1, 1, 1)
	setHealthy(p.backends[0], false)
	p.backends[1].drained.Store(true)
	for range 5 {
		if i := p.pick(0, nil); i != 2 {
			t.Fatalf("picked %d, want 2 (only available backend)", i)
		}
	}
	if i := p.pick(0, tried{false, false, true}); i != -1 {
		t.Fatalf("picked %d with every candidate tried, want -1", i)
	}
}

func TestEveryAlgorithmPicksOnlyAvailableUntriedBackends(t *testing.T) {
	for _, algo := range []string{"round_robin", "least_conn", "random2", "source_hash"} {
		t.Run(algo, func(t *testing.T) {
			p := testPool(t, algo, 0, 1, 1, 1, 1)
			setHealthy(p.backends[0], false)
			p.backends[1].drained.Store(true)
			seen := map[int]int{}
			for k := range 200 {
				seen[p.pick(uint64(k)*0x9e3779b97f4a7c15, tried{false, false, false, true})]++
			}
			if len(seen) != 1 || seen[2] != 200 {
				t.Fatalf("picks %v, want only backend 2", seen)
			}
			setHealthy(p.backends[2], false)
			if i := p.pick(1, tried{false, false, false, true}); i != -1 {
				t.Fatalf("picked %d with nothing available, want -1", i)
			}
		})
	}
}

func TestLeastConnPrefersLeastLoaded(t *testing.T) {
	p := testPool(t, "least_conn", 0, 1, 1, 1)
	p.backends[0].active.Store(5)
	p.backends[1].active.Store(2)
	p.backends[2].active.Store(7)
	for range 10 {
		if i := p.pick(0, nil); i != 1 {
			t.Fatalf("picked %d, want 1 (2 active against 5 and 7)", i)
		}
	}
	// Weighted: (active+1)/weight: backend 0 of weight 4 with 5 active
	// (1.5) beats backend 1 of weight 1 with 2 active (3).
	p = testPool(t, "least_conn", 0, 4, 1)
	p.backends[0].active.Store(5)
	p.backends[1].active.Store(2)
	if i := p.pick(0, nil); i != 0 {
		t.Fatalf("picked %d, want 0 (weighted load 1.5 against 3)", i)
	}
}

func TestLeastConnSpreadsEqualLoadFairly(t *testing.T) {
	p := testPool(t, "least_conn", 0, 1, 1, 1)
	counts := make([]int, 3)
	for range 300 { // connections that stay open: each pick adds load
		i := p.pick(0, nil)
		counts[i]++
		p.backends[i].active.Add(1)
	}
	for i, c := range counts {
		if c != 100 {
			t.Fatalf("backend %d got %d of 300, want 100 each: %v", i, c, counts)
		}
	}
}

func TestRandom2SpreadsLoad(t *testing.T) {
	p := testPool(t, "random2", 0, 1, 1, 1, 1)
	counts := make([]int, 4)
	for range 4000 {
		i := p.pick(0, nil)
		counts[i]++
		p.backends[i].active.Add(1)
	}
	lo, hi := counts[0], counts[0]
	for _, c := range counts {
		lo, hi = min(lo, c), max(hi, c)
	}
	t.Logf("random2 counts over 4000 lasting connections: %v", counts)
	// Two choices keep the spread to a handful; one random choice would
	// typically differ by about a hundred here.
	if hi-lo > 20 {
		t.Fatalf("spread %d (counts %v), want at most 20", hi-lo, counts)
	}
	// Without load feedback every backend is still drawn, the heavier more often.
	p = testPool(t, "random2", 0, 3, 1)
	counts = make([]int, 2)
	for range 4000 {
		counts[p.pick(0, nil)]++
	}
	t.Logf("random2 counts without load, weights 3,1: %v", counts)
	if counts[1] == 0 || counts[0] < 2*counts[1] {
		t.Fatalf("counts %v, want both drawn and backend 0 at least twice backend 1", counts)
	}
}

// sourceHashMap maps n synthetic client keys to backend indexes.
func sourceHashMap(p *pool, n int) []int {
	m := make([]int, n)
	for k := range n {
		m[k] = p.pick(mix64(uint64(k)), nil)
	}
	return m
}

func TestSourceHashStablePerClient(t *testing.T) {
	p := testPool(t, "source_hash", 0, 1, 1, 1, 1, 1)
	const n = 5000
	first := sourceHashMap(p, n)
	if again := sourceHashMap(p, n); !slices.Equal(first, again) {
		t.Fatal("the same clients mapped to different backends on a second pass")
	}
	counts := make([]int, 5)
	for _, i := range first {
		counts[i]++
	}
	t.Logf("source_hash spread of %d clients over 5 backends: %v", n, counts)
	for i, c := range counts {
		if c < n/5*8/10 || c > n/5*12/10 {
			t.Fatalf("backend %d holds %d of %d clients, want within 20%% of %d", i, c, n, n/5)
		}
	}
}

func TestSourceHashMovesAboutOneNthOnChange(t *testing.T) {
	const n = 5000
	p := testPool(t, "source_hash", 0, 1, 1, 1, 1, 1, 1)
	setHealthy(p.backends[5], false) // five in service, a sixth to add
	before := sourceHashMap(p, n)

	// Add the sixth: only clients that move to it move, about 1/6.
	setHealthy(p.backends[5], true)
	added := sourceHashMap(p, n)
	moved := 0
	for k := range n {
		if added[k] != before[k] {
			moved++
			if added[k] != 5 {
				t.Fatalf("client %d moved from %d to %d, not to the added backend", k, before[k], added[k])
			}
		}
	}
	t.Logf("adding a 6th backend moved %d of %d clients (1/6 = %d)", moved, n, n/6)
	if moved < n/6*7/10 || moved > n/6*13/10 {
		t.Fatalf("adding moved %d of %d clients, want about %d", moved, n, n/6)
	}

	// Remove backend 2: only its clients move, spread over the others.
	setHealthy(p.backends[2], false)
	removed := sourceHashMap(p, n)
	moved = 0
	for k := range n {
		if removed[k] != added[k] {
			moved++
			if added[k] != 2 {
				t.Fatalf("client %d moved from %d though backend 2 was removed", k, added[k])
			}
		}
	}
	t.Logf("removing 1 of 6 backends moved %d of %d clients", moved, n)
	if moved < n/6*7/10 || moved > n/6*13/10 {
		t.Fatalf("removing moved %d of %d clients, want about %d", moved, n, n/6)
	}
}

func TestSourceHashFollowsWeight(t *testing.T) {
	p := testPool(t, "source_hash", 0, 3, 1)
	counts := make([]int, 2)
	for _, i := range sourceHashMap(p, 4000) {
		counts[i]++
	}
	t.Logf("source_hash weights 3,1 over 4000 clients: %v", counts)
	if counts[0] < 2500 || counts[0] > 3500 {
		t.Fatalf("weight-3 backend holds %d of 4000, want about 3000", counts[0])
	}
}

func TestSlowStartRampsEffectiveWeight(t *testing.T) {
	p := testPool(t, "round_robin", 10*time.Second, 10, 10)
	be := p.backends[1]
	t0 := time.Unix(1000, 0)
	be.health.(*testHealth).turnUp(t0)
	full := int64(10 * weightScale)
	cases := []struct {
		at   time.Duration
		want int64
	}{{0, full / 10}, {5 * time.Second, full/10 + (full-full/10)/2}, {10 * time.Second, full}, {time.Hour, full}}
	for _, c := range cases {
		if got := be.effWeight(t0.Add(c.at).UnixNano()); got != c.want {
			t.Fatalf("effective weight %s after turning healthy: %d, want %d", c.at, got, c.want)
		}
	}
	if p.backends[0].effWeight(t0.UnixNano()) != full {
		t.Fatal("a backend healthy from the start is not at full weight")
	}
}

func TestSlowStartLimitsShareOfNewBackend(t *testing.T) {
	p := testPool(t, "round_robin", time.Hour, 1, 1)
	p.backends[1].health.(*testHealth).turnUp(time.Now())
	counts := make([]int, 2)
	for range 1100 {
		counts[p.pick(0, nil)]++
	}
	t.Logf("picks right after turning healthy with slow start: %v", counts)
	// At 1/10 weight the new backend gets about 1 in 11 picks.
	if counts[1] < 90 || counts[1] > 110 {
		t.Fatalf("new backend got %d of 1100 picks, want about 100", counts[1])
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	good := poolOf("round_robin", "127.0.0.1:1")
	with := func(change func(*PoolConfig)) []PoolConfig {
		pc := poolOf("round_robin", "127.0.0.1:1")
		change(&pc)
		return []PoolConfig{pc}
	}
	cases := map[string]struct {
		opts Options
		name string // what the error must name
	}{
		"unknown algorithm": {Options{Pools: with(func(pc *PoolConfig) { pc.Algorithm = "fastest" })}, "fastest"},
		"zero weight":       {Options{Pools: with(func(pc *PoolConfig) { pc.Backends[0].Weight = 0 })}, "weight"},
		"bad address":       {Options{Pools: with(func(pc *PoolConfig) { pc.Backends[0].Address = "nohostport" })}, "nohostport"},
		"proxy protocol":    {Options{Pools: with(func(pc *PoolConfig) { pc.ProxyProtocol = "v3" })}, "v3"},
		"duplicate pool":    {Options{Pools: []PoolConfig{good, good}}, `"p"`},
		"unknown pool":      {Options{Pools: []PoolConfig{good}, Frontends: []FrontendConfig{{Name: "f", Listen: "127.0.0.1:0", Pool: "q"}}}, `"q"`},
		// Defaults live in config alone: a value left out is an error, not
		// a silent default of the balancer's own.
		"no algorithm":       {Options{Pools: with(func(pc *PoolConfig) { pc.Algorithm = "" })}, "algorithm"},
		"no proxy protocol":  {Options{Pools: with(func(pc *PoolConfig) { pc.ProxyProtocol = "" })}, "proxy_protocol"},
		"no connect timeout": {Options{Pools: with(func(pc *PoolConfig) { pc.ConnectTimeout = 0 })}, "connect_timeout"},
		"no health":          {Options{Pools: with(func(pc *PoolConfig) { pc.Backends[0].Health = nil })}, "Health"},
	}
	for name, tc := range cases {
		if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s: New returned %v, want an error naming %s", name, err, tc.name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Pools: []PoolConfig{good}, Registerer: reg}); err != nil {
		t.Fatalf("valid options: %v", err)
	}
}

// BenchmarkPick is one pick of each algorithm over four healthy backends,
// from parallel goroutines as the accept loops and workers pick.
func BenchmarkPick(b *testing.B) {
	for _, algo := range []string{"round_robin", "least_conn", "random2", "source_hash"} {
		b.Run(algo, func(b *testing.B) {
			p := testPool(b, algo, time.Minute, 1, 2, 1, 3)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var key uint64
				for pb.Next() {
					key++
					if p.pick(mix64(key), nil) < 0 {
						b.Fatal("no backend picked")
					}
				}
			})
		})
	}
}
