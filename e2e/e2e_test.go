package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/e2e/bed"
	"github.com/vipd/vipd/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if child, code := bed.RunChild(); child {
		os.Exit(code) // a load or spinner process of this bed, not a test run
	}
	goleak.VerifyTestMain(m)
}

// Timing targets of the issue. They are reported on every run and enforced
// only with E2E_STRICT=1: timings on a shared 2-core CI machine are evidence,
// not a pass/fail signal. Safety properties are always enforced.
const (
	targetHandover = 100 * time.Millisecond // SIGTERM
	targetRolling  = 3 * targetHandover     // sum over a rolling restart
)

// failoverTargets are the outage targets of a node death or SIGKILL, by
// timing profile.
var failoverTargets = map[string]struct{ p50, max time.Duration }{
	config.TimingLAN:  {250 * time.Millisecond, 400 * time.Millisecond},
	config.TimingFast: {100 * time.Millisecond, 150 * time.Millisecond},
}

// failoverProfiles are the profiles the failover scenarios run with.
var failoverProfiles = []string{config.TimingLAN, config.TimingFast}

// kernelLifetimeSlack is how late the kernel may remove an address whose
// lifetime ran out, counted from the daemon's death: its last renewal came
// before the kill, but IPv4's lifetime worker rounds its wake-up up to a
// whole second when that is within HZ/4 (250 ms), its timer may fire up to
// the timer wheel's granularity late (tens of ms at 2 s), and the sampler
// reads every 10 ms. Measured: an address added with a 2 s lifetime went
// after 2.28 s (bed's TestSamplerMeasuresKernelLifetimeExpiry), dead daemons'
// VIPs after at most 2.36 s. That the daemon never sets a longer lifetime is
// checked exactly, on the kernel's own valid_lft (see finish).
const kernelLifetimeSlack = 400 * time.Millisecond

// env is one scenario's bed: three vipd nodes, two backends, a client
// sending to the VIP every 10 ms, and the 10 ms VIP holder sampler.
type env struct {
	t       *testing.T
	bed     *bed.Bed
	cluster *bed.Cluster
	sampler *bed.Sampler
	client  *bed.Client
	meter   *bed.Meter
	nodes   []string
	start   time.Time
	// vipdSched ranks the daemons, loadSched the backends and the load
	// processes (nil: the test's own priority).
	vipdSched, loadSched *bed.Sched
}

// repoRoot is the worktree the tests run in (e2e's parent).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// binaries returns bin/vipd and bin/demo-backend, skipping the test when
// either is missing or the test does not run as root.
func binaries(t *testing.T) (vipd, backend string) {
	t.Helper()
	testenv.NeedRoot(t, "e2e builds network namespaces")
	root := repoRoot(t)
	vipd, backend = filepath.Join(root, "bin", "vipd"), filepath.Join(root, "bin", "demo-backend")
	for _, p := range []string{vipd, backend} {
		testenv.NeedFile(t, p, "run make build first")
	}
	return vipd, backend
}

// trials is E2E_TRIALS (default 3 to keep CI short; the full
// measurement is E2E_TRIALS=10).
func trials(t *testing.T) int { return trialsOr(t, 3) }

// trialsOr is E2E_TRIALS, or def when it is not set.
func trialsOr(t *testing.T, def int) int {
	if v := os.Getenv("E2E_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("E2E_TRIALS=%q: want a positive number", v)
		}
		return n
	}
	return def
}

func strict() bool { return os.Getenv("E2E_STRICT") == "1" }

// setup builds the bed and waits until the cluster has formed, exactly one
// node holds the VIP and client traffic flows. witness names a node that
// runs with role witness ("" for none).
func setup(t *testing.T, witness string) *env {
	t.Helper()
	return setupWith(t, bedOptions{witness: witness})
}

// bedOptions vary the cluster of a scenario.
type bedOptions struct {
	witness string   // a node with role witness, or ""
	timing  string   // cluster.timing; "": the bed's default (lan)
	env     []string // added to every daemon's environment
	// loadApart runs the backends and the load processes as another
	// service on the machine (their own session at the default rank),
	// behind the daemons as the systemd unit ranks vipd: they stand for the
	// clients and servers of other machines, whose CPU is not vipd's.
	// E2E_LOAD_SCHED=unit puts them at vipd's rank instead.
	loadApart bool
}

// setupWith is setup with options. The daemons run at the priority the
// systemd unit gives them (deploy/systemd/vipd.service), the client and
// backends at the test's own.
func setupWith(t *testing.T, o bedOptions) *env {
	t.Helper()
	e, opts := newEnv(t, o)
	b, nodes := e.bed, opts.Nodes
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if e.sampler, err = bed.NewSampler(bed.VIP, 10*time.Millisecond, nodes...); err != nil {
		t.Fatal(err)
	}
	e.sampler.Start()
	e.client = bed.NewClient(b.Host("c"), netip.AddrPortFrom(bed.VIP, bed.FrontendPort).String())
	e.meter = &bed.Meter{Sampler: e.sampler, Client: e.client, Settle: settle}
	// Registered after the bed's cleanup, so it runs first: stop measuring,
	// then check the whole timeline for two live holders.
	t.Cleanup(e.finish)
	if e.cluster, err = bed.StartCluster(b, opts); err != nil {
		t.Fatal(err)
	}
	leader, err := e.cluster.WaitFormed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := e.sampler.WaitSingle(ctx, settle, "")
	if err != nil {
		t.Fatal(err)
	}
	e.client.Start()
	if err := e.client.WaitFlowing(ctx, time.Now(), 20); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster formed in %s: raft leader %s, VIP on %s", time.Since(e.start).Round(time.Millisecond), leader, holder)
	return e
}

// newEnv builds the bed (torn down by the test's cleanup) and starts the
// backends; it returns the env without a cluster and the options, with o
// applied, to start one with.
func newEnv(t *testing.T, o bedOptions) (*env, bed.VipdOptions) {
	t.Helper()
	vipdBin, backendBin := binaries(t)
	childBin := filepath.Join(repoRoot(t), "bin", "bedchild")
	testenv.NeedFile(t, childBin, "the bed's load processes; run make build first")
	if _, err := bed.SweepStale(); err != nil {
		t.Logf("sweep stale namespaces: %v", err)
	}
	logDir := t.TempDir()
	if keep := os.Getenv("E2E_LOG_DIR"); keep != "" {
		logDir = filepath.Join(keep, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Logf("process logs kept in %s", logDir)
	}
	b, err := bed.New(bed.DefaultHosts(), logDir)
	if err != nil {
		t.Fatalf("build bed: %v", err)
	}
	b.ChildBin = childBin
	e := &env{t: t, bed: b, nodes: []string{"n1", "n2", "n3"}, start: time.Now()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("process logs (last lines):\n%s", b.Tails(40))
		}
		if err := b.Close(); err != nil {
			t.Errorf("tear down bed: %v", err)
		}
	})
	nodes := []*bed.Host{b.Host("n1"), b.Host("n2"), b.Host("n3")}
	backends := []*bed.Host{b.Host("b1"), b.Host("b2")}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	unit, err := bed.UnitSched(filepath.Join(repoRoot(t), "deploy", "systemd", "vipd.service"))
	if err != nil {
		t.Fatal(err)
	}
	var loadDef *bed.Sched
	if o.loadApart {
		loadDef = &bed.Sched{}
	}
	e.vipdSched, e.loadSched = pickSched(t, "E2E_VIPD_SCHED", &unit), pickSched(t, "E2E_LOAD_SCHED", loadDef)
	if err := bed.StartBackends(ctx, b, backendBin, backends, b.Host("c"), e.loadSched); err != nil {
		t.Fatal(err)
	}
	opts := bed.DefaultVipdOptions(vipdBin, nodes, backends, t.TempDir())
	opts.Witness = o.witness
	if o.timing != "" {
		opts.Timing = o.timing
	}
	opts.Env = append(o.env, strings.Fields(os.Getenv("E2E_VIPD_ENV"))...)
	opts.Sched = e.vipdSched
	return e, opts
}

// finish stops the client and the sampler and fails the test on any sample
// with two live VIP holders.
// pickSched reads a rank from the environment variable name: "unit" (the
// systemd unit's), "none" (the test's own) or "" (def).
func pickSched(t *testing.T, name string, def *bed.Sched) *bed.Sched {
	t.Helper()
	switch v := os.Getenv(name); v {
	case "":
		return def
	case "unit":
		unit, err := bed.UnitSched(filepath.Join(repoRoot(t), "deploy", "systemd", "vipd.service"))
		if err != nil {
			t.Fatal(err)
		}
		return &unit
	case "none":
		return nil
	default:
		t.Fatalf("%s=%q: want unit or none", name, v)
		return nil
	}
}

func (e *env) finish() {
	e.client.Stop()
	e.sampler.Stop()
	for _, v := range e.sampler.Violations() {
		e.t.Errorf("two live VIP holders: %s", v)
	}
	for _, n := range e.nodes {
		lft, held := e.sampler.MaxLifetime(n)
		if held && e.cluster != nil && time.Duration(lft)*time.Second > e.cluster.Opts.Lifetime {
			e.t.Errorf("the VIP on %s had valid_lft %d s, more than the configured lifetime %s", n, lft, e.cluster.Opts.Lifetime)
		}
	}
	for _, err := range e.sampler.Errors() {
		e.t.Errorf("sampler could not read a namespace: %v", err)
	}
	e.t.Logf("VIP holder timeline (live holders, from setup):\n%s", e.meter.Timeline(e.start))
}

func (e *env) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	e.t.Cleanup(cancel)
	return ctx
}

// holder returns the single live VIP holder, waiting for it to be stable.
func (e *env) holder() string {
	e.t.Helper()
	h, err := e.sampler.WaitSingle(e.ctx(15*time.Second), 200*time.Millisecond, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// settle is how long the VIP must stay on one node before a failover counts
// as finished, so a second move (a flap) shows in the measured outage.
const settle = 1500 * time.Millisecond

// recovered waits until the VIP has moved away from old and settled and
// client traffic flows, checks the client's neighbour entry, and returns the
// final holder and the client-seen outage since fault. Extra moves after the
// first are logged: they are part of the outage, not a safety failure.
func (e *env) recovered(fault time.Time, old string) (string, bed.Outage) {
	e.t.Helper()
	r, err := e.meter.Recover(e.ctx(30*time.Second), fault, old)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.Moves > 1 {
		e.t.Logf("FLAP: the VIP moved %d times after the fault on %s:\n%s", r.Moves, old, e.meter.Timeline(fault))
	}
	e.checkNeighbour(r.Holder)
	return r.Holder, r.Outage
}

// checkNeighbour verifies scenario 8: the client's neighbour entry for the
// VIP holds the current holder's MAC.
func (e *env) checkNeighbour(holder string) {
	e.t.Helper()
	want := e.bed.Host(holder).MAC.String()
	mac, state, err := e.bed.Host("c").Neighbour(bed.VIP)
	if err != nil {
		e.t.Fatal(err)
	}
	if mac.String() != want {
		e.t.Errorf("client neighbour entry for the VIP: %s (%s), want holder %s's %s", mac, state, holder, want)
	}
}

// restart starts node's daemon again (after it exited) and waits until the
// whole cluster has formed again with one holder and traffic flowing.
func (e *env) restart(node string) {
	e.t.Helper()
	e.startAgain(node)
	e.rejoined()
}

// startAgain starts node's daemon again, killing it first if it still runs.
func (e *env) startAgain(node string) {
	e.t.Helper()
	if p := e.cluster.Proc(node); !p.Exited() {
		p.Kill()
		<-p.Done()
	}
	if err := e.cluster.Start(node); err != nil {
		e.t.Fatal(err)
	}
}

// rejoined waits for the cluster to be whole and serving, with the VIP on
// one node for settle.
func (e *env) rejoined() {
	e.t.Helper()
	ctx := e.ctx(30 * time.Second)
	if _, err := e.cluster.WaitFormed(ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := e.client.WaitFlowing(ctx, time.Now(), 20); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.sampler.WaitSingle(ctx, settle, ""); err != nil {
		e.t.Fatal(err)
	}
}

// waitGone waits until node's (exempt) VIP has left its namespace and
// returns how long it stayed after since.
func (e *env) waitGone(node string, since time.Time, max time.Duration) (time.Duration, bool) {
	deadline := time.Now().Add(max)
	for {
		d, gone := e.sampler.Leftover(node, since)
		if gone || time.Now().After(deadline) {
			return d, gone
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stats summarises outage samples.
type stats struct{ samples []time.Duration }

func (s *stats) add(d time.Duration) { s.samples = append(s.samples, d) }

func (s stats) p50() time.Duration {
	x := slices.Clone(s.samples)
	slices.Sort(x)
	return x[(len(x)-1)/2]
}

func (s stats) max() time.Duration { return slices.Max(s.samples) }

func (s stats) sum() time.Duration {
	var t time.Duration
	for _, d := range s.samples {
		t += d
	}
	return t
}

func (s stats) String() string {
	parts := make([]string, len(s.samples))
	for i, d := range s.samples {
		parts[i] = d.Round(time.Millisecond).String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// target reports a measured value against its target; a miss fails the test
// only under E2E_STRICT=1.
func (e *env) target(what string, got, want time.Duration) {
	e.t.Helper()
	e.verdict(what, got > want, got.Round(time.Millisecond), want)
}

// targetCount is target for a count, such as failed requests.
func (e *env) targetCount(what string, got, want int) {
	e.t.Helper()
	e.verdict(what, got > want, got, want)
}

// verdict prints a target's RESULT line and, with E2E_STRICT=1, fails the
// test when it was missed.
func (e *env) verdict(what string, missed bool, got, want any) {
	e.t.Helper()
	verdict := "met"
	if missed {
		verdict = "MISSED"
		if strict() {
			e.t.Errorf("%s = %v, target ≤ %v", what, got, want)
		}
	}
	e.t.Logf("RESULT %s = %v (target ≤ %v: %s)", what, got, want, verdict)
}

// failover runs trials of a leader fault that takes the leader's daemon down
// and restores it afterwards; it reports the outages and, for a SIGKILL, how
// long the dead daemon's address stayed.
func (e *env) failover(name string, fault func(leader string), exempt bool, restore func(leader string)) stats {
	var out stats
	var leftovers stats
	phases := phaseStats{}
	for i := range trials(e.t) {
		old := e.holder()
		at := time.Now()
		if exempt {
			e.sampler.Exempt(old, at)
		}
		fault(old)
		h, o := e.recovered(at, old)
		out.add(o.Gap)
		line := fmt.Sprintf("%s trial %d: VIP %s -> %s, outage %s; %s", name, i+1, old, h, o, phases.add(e.phases(h, at, o)))
		if exempt {
			d, gone := e.waitGone(old, at, e.cluster.Opts.Lifetime+5*time.Second)
			if !gone {
				e.t.Fatalf("%s: the dead daemon's VIP still on %s %s after the fault", name, old, d)
			}
			leftovers.add(d)
			line += fmt.Sprintf(", dead node kept the VIP %s", d.Round(time.Millisecond))
			e.sampler.Unexempt(old, time.Now())
		}
		e.t.Log(line)
		restore(old)
	}
	profile := e.cluster.Opts.Timing
	e.t.Logf("RESULT %s (%s) outages %s p50 %s max %s", name, profile, out, out.p50().Round(time.Millisecond), out.max().Round(time.Millisecond))
	e.t.Logf("RESULT %s (%s) phases after the fault, p50 (max): %s", name, profile, phases)
	if exempt {
		e.t.Logf("RESULT %s dead node's VIP leftover %s max %s (lifetime %s)", name, leftovers, leftovers.max().Round(time.Millisecond), e.cluster.Opts.Lifetime)
	}
	want, ok := failoverTargets[profile]
	if !ok {
		e.t.Fatalf("no failover target for timing %q", profile)
	}
	e.target(name+" ("+profile+") outage p50", out.p50(), want.p50)
	e.target(name+" ("+profile+") outage max", out.max(), want.max)
	return leftovers
}

// phases reads from the new holder's log when each step of the failover at
// fault happened, plus the client's last success before it and first after.
func (e *env) phases(holder string, fault time.Time, o bed.Outage) map[string]time.Duration {
	e.t.Helper()
	at, err := bed.Phases(e.cluster.Proc(holder).LogPath, fault)
	if err != nil {
		e.t.Fatal(err)
	}
	ph := map[string]time.Duration{phaseLastOK: o.From.Sub(fault), phaseClientOK: o.To.Sub(fault)}
	for name, t := range at {
		ph[name] = t.Sub(fault)
	}
	return ph
}

// The client's phases of a failover, beside bed.FailoverPhases.
const (
	phaseLastOK   = "last ok"
	phaseClientOK = "client ok"
)

// phaseStats collects each phase's time after the fault over trials.
type phaseStats map[string]*stats

// add keeps one trial's phases and describes them in order.
func (p phaseStats) add(ph map[string]time.Duration) string {
	var parts []string
	for _, name := range phaseOrder() {
		d, ok := ph[name]
		if !ok {
			continue
		}
		if p[name] == nil {
			p[name] = &stats{}
		}
		p[name].add(d)
		parts = append(parts, fmt.Sprintf("%s %s", name, d.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

func (p phaseStats) String() string {
	var parts []string
	for _, name := range phaseOrder() {
		if s := p[name]; s != nil {
			parts = append(parts, fmt.Sprintf("%s %s (%s)", name, s.p50().Round(time.Millisecond), s.max().Round(time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}

func phaseOrder() []string {
	names := []string{phaseLastOK}
	for _, p := range bed.FailoverPhases {
		names = append(names, p.Name)
	}
	return append(names, phaseClientOK)
}

// killNode is a node's death: its processes are killed, then its link goes
// down (in that order, so the daemon cannot react to the link loss).
func (e *env) killNode(node string) {
	e.t.Helper()
	e.cluster.Proc(node).Kill()
	if err := e.bed.Host(node).SetLink(false); err != nil {
		e.t.Fatal(err)
	}
}

// Scenario 1: the leader node dies: its link goes down and its processes are
// killed. Another node takes the VIP; the dead node is not a live holder.
func TestLeaderNodeDeathMovesTheVIP(t *testing.T) {
	for _, profile := range failoverProfiles {
		t.Run(profile, func(t *testing.T) {
			e := setupWith(t, bedOptions{timing: profile})
			e.failover("node death", e.killNode, true, func(leader string) {
				if err := e.bed.Host(leader).SetLink(true); err != nil {
					t.Fatal(err)
				}
				e.restart(leader)
			})
		})
	}
}

// Scenario 2: the leader's daemon is killed with SIGKILL while the node stays
// on the network. Nothing can delete its address: the kernel lifetime must.
func TestLeaderSIGKILLMovesTheVIPAndTheKernelExpiresTheOldOne(t *testing.T) {
	for _, profile := range failoverProfiles {
		t.Run(profile, func(t *testing.T) {
			e := setupWith(t, bedOptions{timing: profile})
			left := e.failover("SIGKILL", func(leader string) {
				e.cluster.Proc(leader).Kill()
			}, true, e.restart)
			bound := e.cluster.Opts.Lifetime + kernelLifetimeSlack
			if left.max() > bound {
				t.Errorf("the SIGKILLed daemon's VIP stayed %s, more than its lifetime %s (+%s kernel timer slack)", left.max(), e.cluster.Opts.Lifetime, kernelLifetimeSlack)
			}
		})
	}
}

// Scenario 3: the leader is cut off for 5 s with its daemon alive, then
// healed. It must drop the VIP before the majority's new leader claims it,
// and healing must leave one holder without an outage.
func TestPartitionedLeaderDropsTheVIPBeforeTheMajorityClaimsIt(t *testing.T) {
	testenv.NeedProgram(t, "nft", "cuts traffic with it (sudo make test installs nftables)")
	for _, tc := range []struct {
		name      string
		cut, heal func(h *bed.Host) error
	}{
		{"nftables drop, link up", (*bed.Host).Isolate, (*bed.Host).Unisolate},
		{"link down", func(h *bed.Host) error { return h.SetLink(false) }, func(h *bed.Host) error { return h.SetLink(true) }},
	} {
		for _, profile := range failoverProfiles {
			t.Run(profile+"/"+strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
				e := setupWith(t, bedOptions{timing: profile})
				old := e.holder()
				h := e.bed.Host(old)
				at := time.Now()
				if err := tc.cut(h); err != nil {
					t.Fatal(err)
				}
				healed := false
				defer func() {
					if !healed {
						_ = tc.heal(h)
					}
				}()
				nw, o := e.recovered(at, old)
				dropped, _ := e.sampler.LastHeld(old, at)
				claimed, _ := e.sampler.FirstHeld(nw, at)
				t.Logf("RESULT partition (%s, %s): old leader %s dropped the VIP at +%s, %s claimed it at +%s, outage %s",
					tc.name, profile, old, dropped.Sub(at).Round(time.Millisecond), nw, claimed.Sub(at).Round(time.Millisecond), o)
				if !dropped.Before(claimed) {
					t.Errorf("old leader %s still held the VIP at +%s, new leader %s claimed it at +%s",
						old, dropped.Sub(at), nw, claimed.Sub(at))
				}
				e.target("partition ("+tc.name+", "+profile+") outage", o.Gap, failoverTargets[profile].max)
				time.Sleep(time.Until(at.Add(5 * time.Second)))
				healAt := time.Now()
				if err := tc.heal(h); err != nil {
					t.Fatal(err)
				}
				healed = true
				e.rejoined()
				ho, err := e.client.Outage(healAt, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				final := e.holder()
				e.checkNeighbour(final)
				t.Logf("RESULT heal (%s): holder %s, longest gap %s, %d failed requests (target: none)\n%s",
					tc.name, final, ho.Gap.Round(time.Millisecond), ho.Failed, e.meter.Timeline(at))
				if ho.Failed > 0 && strict() {
					t.Errorf("healing the partition cost %d failed requests", ho.Failed)
				}
			})
		}
	}
}

// Scenario 4: SIGTERM on the leader is a planned handover.
func TestLeaderSIGTERMHandsOverQuickly(t *testing.T) {
	e := setup(t, "")
	var out stats
	for i := range trials(t) {
		old := e.holder()
		at := time.Now()
		if err := e.cluster.Proc(old).Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		nw, o := e.recovered(at, old)
		if err := e.cluster.Proc(old).Wait(10 * time.Second); err != nil {
			t.Errorf("vipd on %s after SIGTERM: %v", old, err)
		}
		out.add(o.Gap)
		t.Logf("SIGTERM trial %d: VIP %s -> %s, outage %s", i+1, old, nw, o)
		e.restart(old)
	}
	t.Logf("RESULT SIGTERM outages %s p50 %s max %s", out, out.p50().Round(time.Millisecond), out.max().Round(time.Millisecond))
	e.target("SIGTERM handover outage max", out.max(), targetHandover)
}

// SIGHUP is the reload signal of keepalived and HAProxy, so operators send
// it out of habit. Go's default would end vipd at once, leaving its VIP until
// the lifetime ran out; vipd checks its config file instead and nothing moves.
func TestSIGHUPOnTheLeaderMovesNothing(t *testing.T) {
	e := setup(t, "")
	leader := e.holder()
	at := time.Now()
	if err := e.cluster.Proc(leader).Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if e.cluster.Proc(leader).Exited() {
		t.Fatalf("SIGHUP stopped vipd on %s", leader)
	}
	e.undisturbed(e.client, e.sampler, leader, "SIGHUP on the leader", at, time.Now())
}

// Scenario 5: every backend becomes unreachable from the leader only; the
// leader is unfit and leadership moves to a node that sees healthy backends.
func TestLeaderWithoutHealthyBackendsHandsOver(t *testing.T) {
	testenv.NeedProgram(t, "nft", "cuts traffic with it (sudo make test installs nftables)")
	e := setup(t, "")
	old := e.holder()
	h := e.bed.Host(old)
	at := time.Now()
	if err := h.DropTo(bed.BackendAddr...); err != nil {
		t.Fatal(err)
	}
	nw, o := e.recovered(at, old)
	claimed, _ := e.sampler.FirstHeld(nw, at)
	t.Logf("RESULT backends lost on leader %s: VIP moved to %s at +%s, outage %s",
		old, nw, claimed.Sub(at).Round(time.Millisecond), o)
	if err := h.UndropTo(); err != nil {
		t.Fatal(err)
	}
	e.rejoined()
}

// Scenario 6: every node is restarted in turn (SIGTERM, start again, wait
// until the cluster is whole). The sum of the outages is bounded.
func TestRollingRestartKeepsServing(t *testing.T) {
	e := setup(t, "")
	var out stats
	for _, n := range e.nodes {
		holder := e.holder()
		at := time.Now()
		if err := e.cluster.Stop(n, syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		e.restart(n)
		o, err := e.client.Outage(at, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		now := e.holder()
		e.checkNeighbour(now)
		out.add(o.Gap)
		t.Logf("rolling restart of %s (VIP on %s before, %s after): outage %s", n, holder, now, o)
	}
	t.Logf("RESULT rolling restart outages %s sum %s", out, out.sum().Round(time.Millisecond))
	e.target("rolling restart outage sum", out.sum(), targetRolling)
}

// Scenario 7: two real nodes and a witness. The witness never holds the VIP;
// when the real leader dies the other real node takes over.
func TestWitnessLetsTwoNodesFailOver(t *testing.T) {
	e := setup(t, "n3")
	old := e.holder()
	if old == "n3" {
		t.Fatal("the witness holds the VIP")
	}
	at := time.Now()
	e.sampler.Exempt(old, at)
	e.killNode(old)
	nw, o := e.recovered(at, old)
	if nw == "n3" {
		t.Fatal("the witness took the VIP")
	}
	if when, held := e.sampler.FirstHeld("n3", e.start); held {
		t.Errorf("the witness held the VIP at %s", when.Format("15:04:05.000"))
	}
	t.Logf("RESULT witness pair: leader %s died, VIP -> %s, outage %s", old, nw, o)
	e.target("witness pair outage", o.Gap, failoverTargets[config.TimingLAN].max)
}

// Scenario 8: after every leadership move the client's neighbour table
// points at the new holder. Moves here are operator transfers
// (POST /v1/transfer); every other scenario checks the same after its
// failovers.
func TestClientNeighbourFollowsTheHolder(t *testing.T) {
	e := setup(t, "")
	for i := range trials(t) {
		old := e.holder()
		at := time.Now()
		h := e.bed.Host(old)
		ctx := e.ctx(5 * time.Second)
		if err := post(ctx, h, "/v1/transfer"); err != nil {
			t.Fatal(err)
		}
		nw, o := e.recovered(at, old)
		mac, state, _ := e.bed.Host("c").Neighbour(bed.VIP)
		t.Logf("transfer %d: VIP %s -> %s, outage %s, client neighbour %s (%s)", i+1, old, nw, o, mac, state)
	}
}

// post sends an empty POST to the node's admin API from its namespace.
func post(ctx context.Context, h *bed.Host, path string) error {
	code, body, err := h.HTTP(ctx, "POST", netip.AddrPortFrom(h.Addr, bed.AdminPort).String(), path)
	if err != nil {
		return fmt.Errorf("POST %s on %s: %w", path, h.Name, err)
	}
	if code/100 != 2 {
		return fmt.Errorf("POST %s on %s: status %d: %.200s", path, h.Name, code, body)
	}
	return nil
}
