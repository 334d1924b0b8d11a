package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/e2e/bed"
	"github.com/vipd/vipd/internal/testenv"
)

// loadProfiles are the timing profiles a flapping test holds to: those in
// envVar (E2E_PROXY_LOAD_PROFILES, E2E_OUTSIDE_LOAD_PROFILES; make
// soak-leader-load names every profile), else defaults, what make test
// runs. The defaults leave out the leases a shared CI machine is too hard
// on: fast under the leader's own proxy load, and fast and lan under
// outside load, where a host that stops one vCPU only leaves no freeze for
// the test to see (docs/failover.md has the runs).
func loadProfiles(envVar string, defaults ...string) []string {
	if v := strings.Fields(os.Getenv(envVar)); len(v) > 0 {
		return v
	}
	return defaults
}

// loadTrials is E2E_LOAD_TRIALS (default 1), the runs of each flapping test.
func loadTrials(t *testing.T) int { return envInt(t, "E2E_LOAD_TRIALS", 1) }

// loadDuration is E2E_LOAD_SECONDS (default 15), the length of each run.
func loadDuration(t *testing.T) time.Duration {
	return time.Duration(envInt(t, "E2E_LOAD_SECONDS", 15)) * time.Second
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// The load: the client opens new connections through the VIP as fast
// as answers come and downloads in bulk at the same time.
const (
	loadConns = 64
	loadBulk  = 4
)

// TestNoFlappingWhileTheLeaderProxiesFlatOut pushes traffic through the VIP
// as hard as the client can (new connections and bulk downloads) for each
// run, until both cores are busy. The client and the backends stand for
// other machines: they run as another service on this one, behind vipd as
// its systemd unit ranks it, so the leader's proxy takes what it wants and
// its goroutines compete with its own Raft work inside the process.
// (E2E_LOAD_SCHED=unit runs them at vipd's rank, where the kernel gives the
// leader only its fair share of the cores: docs/failover.md.) No node may
// see a term or leadership change and the VIP must stay where it is.
//
// E2E_LOAD_VIA=haproxy sends the same load through HAProxy on the VIP's
// node instead, ranked as vipd is: the machine is as busy, but the proxying
// runs outside vipd's process. docs/failover.md compares the two.
func TestNoFlappingWhileTheLeaderProxiesFlatOut(t *testing.T) {
	via := os.Getenv("E2E_LOAD_VIA")
	if via != "" && via != "haproxy" {
		t.Fatalf("E2E_LOAD_VIA=%q: want haproxy or nothing (vipd)", via)
	}
	for _, profile := range loadProfiles("E2E_PROXY_LOAD_PROFILES", config.TimingLAN, config.TimingWAN) {
		t.Run(profile, func(t *testing.T) {
			e := setupWith(t, bedOptions{timing: profile, loadApart: true})
			target := netip.AddrPortFrom(bed.VIP, bed.FrontendPort).String()
			if via == "haproxy" {
				nodes := []*bed.Host{e.bed.Host("n1"), e.bed.Host("n2"), e.bed.Host("n3")}
				backends := []*bed.Host{e.bed.Host("b1"), e.bed.Host("b2")}
				if err := bed.StartStandInProxies(e.bed, nodes, backends, t.TempDir(), e.vipdSched); err != nil {
					t.Fatal(err)
				}
				target = netip.AddrPortFrom(bed.VIP, bed.StandInPort).String()
				waitServes(t, e.bed.Host("c"), target)
			}
			e.steadyUnder(func(trial int, d time.Duration) func() string {
				l, err := e.bed.StartLoad(e.bed.Host("c"), fmt.Sprintf("load-%d", trial),
					bed.LoadSpec{Target: target, Conns: loadConns, Bulk: loadBulk, Duration: d}, e.loadSched)
				if err != nil {
					t.Fatal(err)
				}
				return func() string {
					res, err := l.Wait(d + 30*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					// A floor that proves the load ran, not a performance target.
					if res.Requests < int64(d/time.Second) || res.BulkBytes == 0 {
						t.Fatalf("the load did not run: %s", res)
					}
					return "client: " + res.String()
				}
			})
		})
	}
}

// waitServes waits up to 10 s for a GET through addr from host to succeed.
func waitServes(t *testing.T, host *bed.Host, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := host.Get(ctx, addr, "/")
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("nothing serves %s: %v", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestNoFlappingUnderOutsideCPULoad keeps every core busy from another
// process at the default priority, like another service on the machine,
// while vipd runs at the priority its systemd unit gives it. No node may see
// a term or leadership change and the VIP must stay where it is.
func TestNoFlappingUnderOutsideCPULoad(t *testing.T) {
	for _, profile := range loadProfiles("E2E_OUTSIDE_LOAD_PROFILES", config.TimingWAN) {
		t.Run(profile, func(t *testing.T) {
			e := setupWith(t, bedOptions{timing: profile})
			e.steadyUnder(func(trial int, d time.Duration) func() string {
				p, err := e.bed.StartSpin(e.bed.Host("c"), fmt.Sprintf("spin-%d", trial), d, &bed.Sched{})
				if err != nil {
					t.Fatal(err)
				}
				return func() string {
					if err := p.Wait(d + 30*time.Second); err != nil {
						t.Fatal(err)
					}
					cpu, _ := p.CPUTime()
					if cpu < d/2 {
						t.Fatalf("the spinner ran only %s in %s: no load was applied", cpu.Round(time.Millisecond), d)
					}
					return fmt.Sprintf("spinner used %.2f cores", cpu.Seconds()/d.Seconds())
				}
			})
		})
	}
}

// steadyUnder runs loadTrials runs of loadDuration each: start applies the
// load and returns a function that waits for its end and describes it. Each
// run fails on any term change, leadership change or VIP move, and reports
// where the CPU went.
func (e *env) steadyUnder(start func(trial int, d time.Duration) (wait func() string)) {
	t := e.t
	d := loadDuration(t)
	timing, ok := config.TimingProfile(e.cluster.Opts.Timing)
	if !ok {
		t.Fatalf("timing %q: not a profile", e.cluster.Opts.Timing)
	}
	var flaps []string
	for i := range loadTrials(t) {
		leader := e.holder()
		before := e.reading()
		watch := testenv.WatchFreezes(20 * time.Millisecond)
		wait := start(i+1, d)
		what := wait()
		freezes, err := watch.Stop()
		if err != nil {
			t.Fatalf("watch the machine's freezes: %v", err)
		}
		after := e.reading()
		r := before.to(after, leader, timing.Lease)
		moves := e.sampler.Changes(before.at, after.at)
		if len(moves) > 0 {
			moves = moves[1:] // the first is where the VIP was
		}
		r.moves = len(moves)
		if o, err := e.client.Outage(before.at, after.at); err == nil || err == bed.ErrNoRecovery {
			r.failed = o.Failed
		}
		t.Logf("RESULT trial %d (%s): %s; %s; stalls of this test process over 20 ms: %v", i+1, d, r, what, freezes)
		if r.flapped() && !hostFroze(freezes, moves, timing) {
			flaps = append(flaps, fmt.Sprintf("trial %d: %s\n%s", i+1, r, e.meter.Timeline(before.at)))
		}
	}
	for _, f := range flaps {
		t.Errorf("leadership moved under load: %s", f)
	}
}

// hostFroze reports whether the host's freezes explain a flapped trial
// (testenv.Freeze.ExplainsLeaseLoss): every VIP move at its time, and some
// freeze at all for term and leadership changes, which the metrics count
// without a time. The nodes run in other processes, ranked ahead of this
// one (deploy/systemd's Nice=-10 under the fair scheduler), so a stall of
// this process that the host stole is the machine's, not vipd's doing:
// each one seen came with the leader's "failed to contact" both voters for
// as long (docs/failover.md). A host freeze longer than the lease expires
// it rightly, as it would for a leader on a machine that stopped alone.
func hostFroze(freezes []testenv.Freeze, moves []bed.Change, tm config.Timing) bool {
	explains := func(at time.Time) bool { return testenv.AnyExplainsLeaseLoss(freezes, at, tm.Heartbeat, tm.Lease) }
	for _, m := range moves {
		if !explains(m.At) {
			return false
		}
	}
	return slices.ContainsFunc(freezes, func(f testenv.Freeze) bool { return explains(f.End) })
}

// reading is one look at every node: Raft term, leadership changes, the
// Go runtime's and the kernel's scheduler figures.
type reading struct {
	at      time.Time
	metrics map[string]bed.Metrics
	usage   map[string]bed.Usage
	machine bed.MachineCPU
}

func (e *env) reading() reading {
	e.t.Helper()
	r := reading{at: time.Now(), metrics: map[string]bed.Metrics{}, usage: map[string]bed.Usage{}}
	ctx := e.ctx(5 * time.Second)
	for _, n := range e.nodes {
		m, err := e.cluster.Metrics(ctx, n)
		if err != nil {
			e.t.Fatal(err)
		}
		r.metrics[n] = m
		if r.usage[n], err = e.cluster.Proc(n).Usage(); err != nil {
			e.t.Fatal(err)
		}
	}
	var err error
	if r.machine, err = bed.ReadMachineCPU(); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// window is what changed between two readings.
type window struct {
	leader  string
	elapsed time.Duration
	terms   map[string]float64          // term increase per node
	changes map[string]float64          // leadership changes per node
	moves   int                         // VIP holder changes seen by the sampler
	failed  int                         // probe client requests that failed
	sched   map[string][2]time.Duration // per node: p99 and worst goroutine wait for a thread
	gc      [2]time.Duration            // leader: p99 and worst GC pause
	contact [2]time.Duration            // leader: p99 and worst age of a voter's last answer at lease checks
	lease   time.Duration               // the profile's leader lease
	late    [3]float64                  // leader: lease checks with an age over half the lease and over it, of all
	rtt     map[string][2]time.Duration // leader: p99 and worst heartbeat round trip per peer
	cpu     map[string]bed.Usage
	machine bed.MachineCPU
}

func (r reading) to(after reading, leader string, lease time.Duration) window {
	w := window{
		leader: leader, elapsed: after.at.Sub(r.at), lease: lease,
		terms: map[string]float64{}, changes: map[string]float64{}, sched: map[string][2]time.Duration{}, cpu: map[string]bed.Usage{},
		rtt:     map[string][2]time.Duration{},
		machine: after.machine.Sub(r.machine),
	}
	for n, m := range after.metrics {
		w.terms[n] = m["vipd_election_term"] - r.metrics[n]["vipd_election_term"]
		w.changes[n] = m["vipd_election_leadership_changes_total"] - r.metrics[n]["vipd_election_leadership_changes_total"]
		w.sched[n] = p99max(m.Histogram("vipd_runtime_sched_latency_seconds", "", r.metrics[n]))
		w.cpu[n] = after.usage[n].Sub(r.usage[n])
		if n != leader {
			w.rtt[n] = p99max(after.metrics[leader].Histogram("vipd_raft_heartbeat_seconds", `peer="`+n+`"`, r.metrics[leader]))
		}
	}
	w.gc = p99max(after.metrics[leader].Histogram("vipd_runtime_gc_pause_seconds", "", r.metrics[leader]))
	ages := after.metrics[leader].Histogram("vipd_raft_leader_contact_age_seconds", "", r.metrics[leader])
	w.contact = p99max(ages)
	if len(ages) > 0 {
		w.late = [3]float64{bed.Above(ages, lease/2), bed.Above(ages, lease), ages[len(ages)-1].Count}
	}
	return w
}

func p99max(b []bed.Bucket) [2]time.Duration {
	p99, _ := bed.Quantile(b, 0.99)
	return [2]time.Duration{p99, bed.Largest(b)}
}

func (w window) flapped() bool {
	for n := range w.terms {
		if w.terms[n] != 0 || w.changes[n] != 0 {
			return true
		}
	}
	return w.moves != 0
}

func (w window) String() string {
	var sb strings.Builder
	var terms, changes []string
	for _, n := range sortedKeys(w.terms) {
		terms = append(terms, fmt.Sprintf("%s+%g", n, w.terms[n]))
		changes = append(changes, fmt.Sprintf("%s+%g", n, w.changes[n]))
	}
	fmt.Fprintf(&sb, "leader %s; terms %s; leadership changes %s; VIP moves %d, probe failures %d",
		w.leader, strings.Join(terms, " "), strings.Join(changes, " "), w.moves, w.failed)
	fmt.Fprintf(&sb, "; leader: voter contact age at lease checks p99 %s max %s (%g over half the %s lease, %g over it, of %g), GC pauses p99 %s max %s",
		w.contact[0], w.contact[1], w.late[0], w.lease, w.late[1], w.late[2], w.gc[0], w.gc[1])
	for _, n := range sortedKeys(w.rtt) {
		fmt.Fprintf(&sb, ", heartbeat to %s p99 %s max %s", n, w.rtt[n][0], w.rtt[n][1])
	}
	for _, n := range sortedKeys(w.terms) {
		u := w.cpu[n]
		fmt.Fprintf(&sb, "; %s cpu %.2f cores, run-queue wait %.0f%% (%s per slice), goroutine wait p99 %s max %s",
			n, u.CPU.Seconds()/w.elapsed.Seconds(), 100*u.Waited.Seconds()/w.elapsed.Seconds(), u.WaitPerSlice().Round(time.Microsecond), w.sched[n][0], w.sched[n][1])
	}
	m := w.machine
	per := func(d time.Duration) float64 { return d.Seconds() / w.elapsed.Seconds() }
	fmt.Fprintf(&sb, "; machine busy %.2f cores (softirq %.2f, steal %.2f), some task stalled on cpu %.0f%%, memory %.0f%%, io %.0f%% of the time",
		per(m.Busy), per(m.SoftIRQ), per(m.Steal), 100*per(m.Stall[0]), 100*per(m.Stall[1]), 100*per(m.Stall[2]))
	return sb.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
