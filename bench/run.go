package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Metric names, as -only takes them.
const (
	MetricBulk1 = "bulk1"
	MetricBulk8 = "bulk8"
	MetricConns = "conns"
	MetricPairs = "pairs"
	MetricIdle  = "idle"
	// The real-peer case, wrk → proxy → nginx: keep-alive, and a new
	// connection per request.
	MetricPeerKeepAlive = "peer"
	MetricPeerClose     = "peerclose"
)

// AllMetrics lists every metric in run order.
var AllMetrics = []string{MetricBulk1, MetricBulk8, MetricConns, MetricPairs, MetricPeerKeepAlive, MetricPeerClose, MetricIdle}

// LocalMetrics are the metrics that need no program but the proxies: the
// client and backend are this package's.
var LocalMetrics = []string{MetricBulk1, MetricBulk8, MetricConns, MetricPairs, MetricIdle}

// AllTargets lists every target in the order of the first round.
var AllTargets = []string{"direct", "haproxy", "vipd"}

// settle is the pause before each run, so the previous run's closing
// connections and garbage do not land in the next one.
const settle = 300 * time.Millisecond

// Options says what to measure and with which binaries.
type Options struct {
	Duration    time.Duration // length of each run
	Rounds      int
	Metrics     []string // subset of AllMetrics, in any order
	Targets     []string // subset of AllTargets, in any order
	Concurrency int      // workers of the connection-rate run, connections of the pairs run
	IdleConns   int      // connections of the idle-memory run
	// IdleSettle is how long the idle connections have been open when the
	// memory figures are read: an idle connection is one that has been idle
	// for a while, and a proxy may shed what a connection needed only while
	// it was new (vipd parks a connection after a second without data).
	IdleSettle time.Duration
	HAProxyBin string
	VipdBin    string
	NginxBin   string   // the real-peer backend; needed by the peer metrics
	WrkBin     string   // the real-peer client; needed by the peer metrics
	VipdEnv    []string // added to vipd's environment, "KEY=value"
	// Builds are more vipd binaries measured as targets of their own, to
	// compare variants (a copy strategy, say) in the same interleaved run.
	Builds        []Build
	HAProxySplice bool
	MaxConn       int       // connection limit of both proxies (HAProxy maxconn, vipd max_connections)
	Dir           string    // scratch directory for configurations, logs and vipd's data
	Progress      io.Writer // one line per run; nil means none
}

// Build is a vipd binary measured as a target named Name.
type Build struct{ Name, Bin string }

// Report is what Run measured.
type Report struct {
	Targets  []string
	Rows     []Row
	Warnings []string // failed runs and runs with errors, in order
}

// metric is one workload and the rows it fills.
type metric struct {
	name string
	rows []Row
	// cost, if set, adds rows with what the proxy spent per unit of work;
	// such a metric is timed, and its run's first value is a rate.
	cost *cost
	// run measures target t once and returns one value per row (but for
	// the cost rows, which measure adds).
	run func(ctx context.Context, t *Target) ([]float64, []string, error)
	// peer: the metric runs through the target's twin in front of nginx.
	peer bool
}

// cost says how to turn the proxy's CPU time and context switches during a
// run into figures per unit of the run's rate (the metric's first value).
type cost struct {
	cpuScale  float64 // CPU seconds per unit × cpuScale is the CPU row's value
	switches  bool    // add a row with context switches per unit
	cpuTarget float64 // the CPU row's vipd/haproxy goal (at most); 0 means none
}

// rows returns the rows cost adds: the CPU row labelled cpuUnit ("s per
// GB", "µs per conn") and, if asked, context switches per unit ("conn").
func (c *cost) rows(cpuUnit, unit string) []Row {
	rows := []Row{{Name: "  proxy CPU " + cpuUnit, Target: c.cpuTarget}}
	if c.switches {
		rows = append(rows, Row{Name: "  proxy context switches per " + unit})
	}
	return rows
}

// Run starts the backend and the targets, measures every metric through
// every target, interleaved round by round, and stops everything it started
// before returning, also when ctx is cancelled.
func Run(ctx context.Context, o Options) (*Report, error) {
	backend, err := NewBackend("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer backend.Close()

	targets, err := startTargets(ctx, o, backend.Addr(), nil)
	defer func() {
		for _, t := range targets {
			t.Stop()
		}
	}()
	if err != nil {
		return nil, err
	}

	metrics := buildMetrics(o, backend)
	peers, stopPeers, err := startPeers(ctx, o)
	defer stopPeers()
	if err != nil {
		return nil, err
	}
	rep := &Report{Targets: make([]string, len(targets))}
	for i, t := range targets {
		rep.Targets[i] = t.Name
	}
	for _, m := range metrics {
		rep.Rows = append(rep.Rows, m.rows...)
	}
	// The last row says how disturbed the runs were.
	rep.Rows = append(rep.Rows, Row{Name: "other processes' CPU % (all runs)"})
	other := &rep.Rows[len(rep.Rows)-1]
	o.progress("warm-up: %s each", strings.Join(rep.Targets, ", "))
	for _, t := range targets {
		if err := warmUp(ctx, t); err != nil {
			return nil, err
		}
	}

	for round := range o.Rounds {
		order := rotate(targets, round)
		row := 0
		for _, m := range metrics {
			for _, t := range order {
				if err := ctx.Err(); err != nil {
					return rep, fmt.Errorf("interrupted: %w", err)
				}
				mt := t
				if m.peer {
					mt = peers[t.Name]
				}
				if err := alive(mt); err != nil {
					return rep, err
				}
				vals, busy, warns, err := measure(ctx, m, mt)
				other.Add(t.Name, busy)
				for _, w := range warns {
					rep.Warnings = append(rep.Warnings, fmt.Sprintf("round %d %s %s: %s", round+1, m.name, t.Name, w))
				}
				if err != nil {
					rep.Warnings = append(rep.Warnings, fmt.Sprintf("round %d %s %s: %v", round+1, m.name, t.Name, err))
				}
				for k := range m.rows {
					rep.Rows[row+k].Add(t.Name, vals[k])
				}
				o.progress("round %d/%d %-6s %-8s %s", round+1, o.Rounds, m.name, t.Name, describe(m.rows, vals))
			}
			row += len(m.rows)
		}
	}
	return rep, nil
}

func (o Options) progress(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// startPeers starts nginx and, in front of it, a twin of every target when
// a peer metric is selected; stop stops what it started, also on error.
func startPeers(ctx context.Context, o Options) (map[string]*Target, func(), error) {
	var nginx *Nginx
	var twins []*Target
	stop := func() {
		for _, t := range twins {
			t.Stop()
		}
		if nginx != nil {
			nginx.Proc.Stop()
		}
	}
	if !slices.Contains(o.Metrics, MetricPeerKeepAlive) && !slices.Contains(o.Metrics, MetricPeerClose) {
		return nil, stop, nil
	}
	if o.NginxBin == "" || o.WrkBin == "" {
		return nil, stop, errors.New("the peer metrics need nginx and wrk (apt-get install nginx wrk), or leave them out with -only")
	}
	dir, err := os.MkdirTemp(o.Dir, "nginx-")
	if err != nil {
		return nil, stop, fmt.Errorf("scratch dir for nginx: %w", err)
	}
	if nginx, err = StartNginx(ctx, o.NginxBin, dir); err != nil {
		return nil, stop, err
	}
	o.progress("started nginx on %s (the real peer)", nginx.Addr)
	twins, err = startTargets(ctx, o, nginx.Addr, HTTPOnce)
	peers := make(map[string]*Target, len(twins))
	for _, t := range twins {
		peers[t.Name] = t
	}
	return peers, stop, err
}

// startTargets starts the selected targets in AllTargets order. On error it
// returns those already started, for the caller to stop.
func startTargets(ctx context.Context, o Options, backend string, probe Probe) ([]*Target, error) {
	var targets []*Target
	for _, name := range AllTargets {
		if !slices.Contains(o.Targets, name) {
			continue
		}
		t, err := startTarget(ctx, o, name, backend, probe)
		if err != nil {
			return targets, err
		}
		o.progress("started %s on %s", name, t.Addr)
		targets = append(targets, t)
	}
	for _, b := range o.Builds {
		t, err := startTarget(ctx, o, b.Name, backend, probe)
		if err != nil {
			return targets, err
		}
		o.progress("started %s (%s) on %s", b.Name, b.Bin, t.Addr)
		targets = append(targets, t)
	}
	return targets, nil
}

// startTarget starts one target by name, a proxy in a scratch directory of
// its own under o.Dir.
func startTarget(ctx context.Context, o Options, name, backend string, probe Probe) (*Target, error) {
	if name == "direct" {
		return &Target{Name: "direct", Addr: backend}, nil
	}
	dir, err := os.MkdirTemp(o.Dir, name+"-")
	if err != nil {
		return nil, fmt.Errorf("scratch dir for %s: %w", name, err)
	}
	if name == "haproxy" {
		return StartHAProxy(ctx, o.HAProxyBin, dir, backend, o.HAProxySplice, o.MaxConn, probe)
	}
	bin := o.VipdBin
	for _, b := range o.Builds {
		if b.Name == name {
			bin = b.Bin
		}
	}
	return StartVipd(ctx, name, bin, dir, backend, o.MaxConn, o.VipdEnv, probe)
}

// rotate returns targets shifted left by round, so that no target always
// runs first (right after the previous metric) or last.
func rotate(targets []*Target, round int) []*Target {
	if len(targets) == 0 {
		return nil
	}
	k := round % len(targets)
	return append(slices.Clone(targets[k:]), targets[:k]...)
}

func alive(t *Target) error {
	if t.Proc == nil {
		return nil
	}
	select {
	case <-t.Proc.Exited():
		return fmt.Errorf("%s has exited; its log:\n%s", t.Name, t.Proc.LogTail(20))
	default:
		return nil
	}
}

// warmUp runs every workload briefly through t, so that first-run effects
// (page faults, heap growth, connection pools) stay out of the figures.
func warmUp(ctx context.Context, t *Target) error {
	const d = 300 * time.Millisecond
	if _, err := Bulk(ctx, t.Addr, 2, d); err != nil {
		return fmt.Errorf("warm-up %s: %w", t.Name, err)
	}
	if r := ConnRate(ctx, t.Addr, 4, d); r.Count == 0 {
		return fmt.Errorf("warm-up %s: no connection completed: %v", t.Name, r.FirstErr)
	}
	if _, err := Pairs(ctx, t.Addr, 4, d); err != nil {
		return fmt.Errorf("warm-up %s: %w", t.Name, err)
	}
	return nil
}

// measure runs m once through t after a pause and a GC of the benchmark's
// own heap, and adds the proxy's CPU use as the last value when m asks. It
// then also returns the CPU other processes used meanwhile (percent of a
// core), else NaN.
func measure(ctx context.Context, m metric, t *Target) ([]float64, float64, []string, error) {
	runtime.GC()
	select {
	case <-ctx.Done():
	case <-time.After(settle):
	}
	nan := func() []float64 {
		v := make([]float64, len(m.rows))
		for i := range v {
			v[i] = math.NaN()
		}
		return v
	}
	bg := startBackground(t)
	var switches int64
	if t.Proc != nil {
		switches, _ = ContextSwitches(t.Proc.PID())
	}
	start := time.Now()
	vals, warns, err := m.run(ctx, t)
	elapsed := time.Since(start)
	// Only timed workloads say something about disturbance; the idle run
	// starts processes of its own.
	busy := math.NaN()
	if m.cost != nil {
		busy = bg.finish(elapsed, t)
	}
	if busy > backgroundLimit {
		warns = append(warns, fmt.Sprintf("other processes used %.0f%% of a core during the run", busy))
	}
	if err != nil {
		return nan(), busy, warns, err
	}
	if c := m.cost; c != nil {
		// Per second of the run, divided by units per second: per unit.
		rate := vals[0]
		cpu, sw := math.NaN(), math.NaN()
		if t.Proc != nil && rate > 0 {
			if after, err := ReadUsage(t.Proc.PID()); err == nil {
				cpu = (after.CPU - bg.proxy.CPU).Seconds() / elapsed.Seconds() / rate * c.cpuScale
			}
			if after, err := ContextSwitches(t.Proc.PID()); err == nil {
				sw = float64(after-switches) / elapsed.Seconds() / rate
			}
		}
		vals = append(vals, cpu)
		if c.switches {
			vals = append(vals, sw)
		}
	}
	return vals, busy, warns, nil
}

// backgroundLimit is the CPU use of other processes, in percent of one
// core, above which a run is flagged as disturbed.
const backgroundLimit = 25

// background holds the CPU readings taken at the start of a run: the
// machine's, the benchmark's and the proxy's (zero for direct).
type background struct {
	busy, self time.Duration
	proxy      Usage
	ok         bool
}

func startBackground(t *Target) background {
	busy, err1 := MachineBusy()
	self, err2 := ReadUsage(os.Getpid())
	b := background{busy: busy, self: self.CPU, ok: err1 == nil && err2 == nil}
	if t.Proc != nil {
		p, err := ReadUsage(t.Proc.PID())
		b.proxy, b.ok = p, b.ok && err == nil
	}
	return b
}

// finish returns the CPU time other processes used during the run, in
// percent of one core; NaN when it could not be read.
func (b background) finish(elapsed time.Duration, t *Target) float64 {
	busy, err1 := MachineBusy()
	self, err2 := ReadUsage(os.Getpid())
	if !b.ok || err1 != nil || err2 != nil || elapsed <= 0 {
		return math.NaN()
	}
	other := (busy - b.busy) - (self.CPU - b.self)
	if t.Proc != nil {
		if p, err := ReadUsage(t.Proc.PID()); err == nil {
			other -= p.CPU - b.proxy.CPU
		}
	}
	return 100 * other.Seconds() / elapsed.Seconds()
}

func describe(rows []Row, vals []float64) string {
	parts := make([]string, len(rows))
	for i := range rows {
		parts[i] = strings.TrimSpace(rows[i].Name) + "=" + FormatValue(vals[i])
	}
	return strings.Join(parts, " ")
}

func buildMetrics(o Options, backend *Backend) []metric {
	bulkCost := &cost{cpuScale: 1000}                            // MB/s → CPU seconds per GB
	opCost := &cost{cpuScale: 1e6, switches: true, cpuTarget: 1} // ops/s → CPU µs per op
	peer := func(conns int, close bool) func(context.Context, *Target) ([]float64, []string, error) {
		return func(ctx context.Context, t *Target) ([]float64, []string, error) {
			r, err := RunWrk(ctx, o.WrkBin, t.Addr, conns, o.Duration, close)
			if err != nil {
				return nil, nil, err
			}
			var warns []string
			if r.Errors > 0 {
				warns = append(warns, fmt.Sprintf("wrk counted %d errors in %.0f requests", r.Errors, r.Requests))
			}
			return []float64{r.PerSec}, warns, nil
		}
	}
	bulk := func(streams int) func(context.Context, *Target) ([]float64, []string, error) {
		return func(ctx context.Context, t *Target) ([]float64, []string, error) {
			r, err := Bulk(ctx, t.Addr, streams, o.Duration)
			return []float64{r.MBps()}, nil, err
		}
	}
	latency := func(r LatencyResult) ([]float64, []string, error) {
		var warns []string
		if r.Errors > 0 {
			warns = append(warns, fmt.Sprintf("%d of %d operations failed, first: %v", r.Errors, r.Errors+r.Count, r.FirstErr))
		}
		if r.Count == 0 {
			return nil, warns, errors.New("no operation completed")
		}
		return []float64{r.PerSecond(), micros(r.P(50)), micros(r.P(99))}, warns, nil
	}
	all := map[string]metric{
		MetricBulk1: {
			name: MetricBulk1, cost: bulkCost,
			rows: append([]Row{{Name: "bulk 1 stream (MB/s)", Higher: true, Target: 1.2}}, bulkCost.rows("s per GB", "")...),
			run:  bulk(1),
		},
		MetricBulk8: {
			name: MetricBulk8, cost: bulkCost,
			rows: append([]Row{{Name: "bulk 8 streams (MB/s)", Higher: true, Target: 1.2}}, bulkCost.rows("s per GB", "")...),
			run:  bulk(8),
		},
		MetricConns: {
			name: MetricConns, cost: opCost,
			rows: append([]Row{
				{Name: "new connections/s", Higher: true, Target: 1.1},
				{Name: "  connection p50 (µs)", Target: 1.0},
				{Name: "  connection p99 (µs)"},
			}, opCost.rows("µs per conn", "conn")...),
			run: func(ctx context.Context, t *Target) ([]float64, []string, error) {
				return latency(ConnRate(ctx, t.Addr, o.Concurrency, o.Duration))
			},
		},
		MetricPairs: {
			name: MetricPairs, cost: opCost,
			rows: append([]Row{
				{Name: "request/response pairs/s", Higher: true, Target: 1.1},
				{Name: "  pair p50 (µs)", Target: 1.0},
				{Name: "  pair p99 (µs)", Target: 1.0},
			}, opCost.rows("µs per pair", "pair")...),
			run: func(ctx context.Context, t *Target) ([]float64, []string, error) {
				r, err := Pairs(ctx, t.Addr, o.Concurrency, o.Duration)
				if err != nil {
					return nil, nil, err
				}
				return latency(r)
			},
		},
		MetricPeerKeepAlive: {
			name: MetricPeerKeepAlive, cost: opCost, peer: true,
			rows: append([]Row{{Name: fmt.Sprintf("wrk→nginx keep-alive, %d conns (req/s)", PeerKeepAliveConns), Higher: true, Target: 1.1}},
				opCost.rows("µs per request", "request")...),
			run: peer(PeerKeepAliveConns, false),
		},
		MetricPeerClose: {
			name: MetricPeerClose, cost: opCost, peer: true,
			rows: append([]Row{{Name: fmt.Sprintf("wrk→nginx new conn per request, %d conns (req/s)", PeerCloseConns), Higher: true, Target: 1.1}},
				opCost.rows("µs per request", "request")...),
			run: peer(PeerCloseConns, true),
		},
		MetricIdle: {
			name: MetricIdle,
			rows: []Row{
				{Name: fmt.Sprintf("RSS growth per 10k idle conns (MiB, from %d, after %s)", o.IdleConns, o.IdleSettle), Target: 1.5},
				{Name: fmt.Sprintf("RSS with %d idle conns (MiB)", o.IdleConns)},
				{Name: "  proxy fds per idle conn", Target: 1.0},
				{Name: "  kernel slab growth per 10k (MiB, machine)", Target: 1.2},
			},
			// A fresh instance of the proxy: one that has served the other
			// workloads keeps their memory in its pools, and its RSS would
			// hardly grow.
			run: func(ctx context.Context, t *Target) ([]float64, []string, error) {
				if t.Proc == nil {
					return []float64{math.NaN(), math.NaN(), math.NaN(), math.NaN()}, nil, nil
				}
				fresh, err := startTarget(ctx, o, t.Name, backend.Addr(), nil)
				if err != nil {
					return nil, nil, err
				}
				defer fresh.Stop()
				return idleMemory(ctx, fresh, o.IdleConns, o.IdleSettle, backend)
			},
		},
	}
	var out []metric
	for _, name := range AllMetrics {
		if slices.Contains(o.Metrics, name) {
			out = append(out, all[name])
		}
	}
	return out
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

const mib = 1 << 20

// idleMemory opens n idle connections through the proxy t and reads its
// RSS and open descriptors before they open and settle after they are all
// open. Descriptors matter beside RSS:
// kernel objects such as splice pipes held per connection use memory that
// RSS does not show, and count against the open-file limit.
func idleMemory(ctx context.Context, t *Target, n int, settle time.Duration, backend *Backend) ([]float64, []string, error) {
	before, err := ReadUsage(t.Proc.PID())
	if err != nil {
		return nil, nil, err
	}
	fdsBefore, err := OpenFiles(t.Proc.PID())
	if err != nil {
		return nil, nil, err
	}
	slabBefore, err := KernelSlab()
	if err != nil {
		return nil, nil, err
	}
	cs, err := OpenIdle(ctx, t.Addr, n, backend)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
		// The next run starts only when the proxy has let go of all of them.
		waitFor(ctx, 30*time.Second, func() bool { return backend.IdleConns() == 0 })
	}()
	if err != nil {
		return nil, nil, err
	}
	select {
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	case <-time.After(settle):
	}
	after, err := ReadUsage(t.Proc.PID())
	if err != nil {
		return nil, nil, err
	}
	fdsAfter, err := OpenFiles(t.Proc.PID())
	if err != nil {
		return nil, nil, err
	}
	slabAfter, err := KernelSlab()
	if err != nil {
		return nil, nil, err
	}
	per10k := func(bytes int64) float64 { return float64(bytes) / mib * 10000 / float64(n) }
	fds := float64(fdsAfter-fdsBefore) / float64(n)
	return []float64{per10k(after.RSS - before.RSS), float64(after.RSS) / mib, fds, per10k(slabAfter - slabBefore)}, nil, nil
}

// ParseList splits a comma-separated flag value and checks every item
// against allowed; empty means all of allowed.
func ParseList(flagName, value string, allowed []string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return slices.Clone(allowed), nil
	}
	var out []string
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if !slices.Contains(allowed, item) {
			return nil, fmt.Errorf("-%s: unknown %q (choose from %s)", flagName, item, strings.Join(allowed, ","))
		}
		if !slices.Contains(out, item) {
			out = append(out, item)
		}
	}
	return out, nil
}
