// Command benchfailover measures the client-seen outage when the VIP holder
// fails, for vipd (a timing profile each) and for keepalived (VRRPv3 at a
// given advert_int) with HAProxy, on the same namespace bed, and prints every
// outage side by side, with where vipd's failovers spent their time (from
// the new holder's log) and the machine's CPU and load.
//
// It uses the built bin/vipd and bin/demo-backend (run `make build` first; `make
// bench-failover` does both) and the Debian keepalived and haproxy packages.
// It needs root: it creates network namespaces. Faults: "death" (the holder's
// link goes down and all its processes are killed) and "sigkill" (only the VIP
// daemon is killed with SIGKILL; the node stays on the network).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vipd/vipd/e2e/bed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchfailover:", err)
		os.Exit(1)
	}
}

// system is one way of holding the VIP on the bed.
type system interface {
	// killDaemon kills the process that holds the VIP with SIGKILL.
	killDaemon(node string)
	// killNode kills every process of the node.
	killNode(node string)
	// restart starts again what was killed on node and waits until it runs.
	restart(ctx context.Context, node string) error
	// lifetime is how long a dead daemon's VIP may stay (0: forever).
	lifetime() time.Duration
	// phases reads, for the failover at fault, when each of
	// bed.FailoverPhases happened on node, after the fault; false for a
	// system without them.
	phases(node string, fault time.Time) (map[string]time.Duration, bool, error)
}

type config struct {
	trials           int
	vipdBin, backend string
	systems, faults  []string
	spreadFaults     []string // kinds of the spread scenario: death, cut
	keepLogs         string
	vipdEnv          []string   // added to every vipd's environment
	vipdSched        *bed.Sched // vipd's rank (the systemd unit's), nil: this process's
}

func run() error {
	var c config
	var systems, faults, spreadFaults string
	var env, unit string
	flag.IntVar(&c.trials, "trials", 10, "failovers per system and fault")
	flag.StringVar(&c.vipdBin, "vipd", "bin/vipd", "vipd binary")
	flag.StringVar(&c.backend, "backend", "bin/demo-backend", "demo backend binary")
	flag.StringVar(&systems, "systems", "vipd-lan,vipd-fast,keepalived-1s,keepalived-100ms,keepalived-50ms,keepalived-20ms",
		"systems to compare: vipd-PROFILE (a timing profile), keepalived-ADVERT (advert_int as a Go duration)")
	flag.StringVar(&faults, "faults", "death,sigkill", "faults to inject on the holder")
	flag.StringVar(&c.keepLogs, "logs", "", "keep process logs in this directory (default: removed)")
	flag.StringVar(&env, "vipd-env", "", "comma-separated NAME=VALUE added to every vipd's environment (GOGC=400)")
	flag.StringVar(&unit, "vipd-unit", "deploy/systemd/vipd.service", "run vipd at this systemd unit's Nice= and CPUWeight= (\"\": at this process's priority)")
	spreadBed := flag.Bool("spread", false, "the spread scenario instead: three VIPs, one per node (vipd placement: spread; keepalived one VRRP instance per VIP), node deaths and cuts (vipd: a follower's, the leader's)")
	flag.StringVar(&spreadFaults, "spread-faults", "death,cut", "kinds of fault of the spread scenario: death (processes killed, link down), cut (every frame dropped for 3 s, link up)")
	flag.Parse()
	c.systems, c.faults, c.spreadFaults = strings.Split(systems, ","), strings.Split(faults, ","), strings.Split(spreadFaults, ",")
	if env != "" {
		c.vipdEnv = strings.Split(env, ",")
	}
	if unit != "" {
		s, err := bed.UnitSched(unit)
		if err != nil {
			return err
		}
		c.vipdSched = &s
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it builds network namespaces (try sudo make bench-failover)")
	}
	for _, p := range []string{c.vipdBin, c.backend} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing: run make build first", p)
		}
	}
	for _, s := range c.systems {
		if strings.HasPrefix(s, "keepalived") {
			for _, bin := range []string{"keepalived", "haproxy"} {
				if _, err := exec.LookPath(bin); err != nil {
					return fmt.Errorf("%s not installed: sudo make bench-failover installs it (scripts/deps.sh)", bin)
				}
			}
		}
	}
	for _, k := range c.spreadFaults {
		if k != "death" && k != "cut" {
			return fmt.Errorf("-spread-faults %q: %q is neither death nor cut", spreadFaults, k)
		}
	}
	if *spreadBed && slices.Contains(c.spreadFaults, "cut") {
		if _, err := exec.LookPath("nft"); err != nil {
			return errors.New("nft not installed (the spread cut needs it): sudo make bench-failover installs it (scripts/deps.sh)")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := bed.SweepStale(); err != nil {
		fmt.Fprintln(os.Stderr, "sweep stale namespaces:", err)
	}

	fmt.Printf("machine: %s, %d CPUs; load average at start %s\n", cpuModel(), runtime.NumCPU(), loadAvg())
	if len(c.vipdEnv) > 0 {
		fmt.Printf("vipd environment: %s\n", strings.Join(c.vipdEnv, " "))
	}
	if c.vipdSched != nil {
		fmt.Printf("vipd ranked as %s: nice %d, autogroup nice %d; keepalived and HAProxy at this process's\n", unit, c.vipdSched.Nice, c.vipdSched.GroupNice)
	}
	if *spreadBed {
		return runSpread(ctx, c)
	}
	var rows []row
	for _, s := range c.systems {
		for _, f := range c.faults {
			r, err := measure(ctx, c, s, f)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", s, f, err)
			}
			rows = append(rows, r)
		}
	}
	fmt.Printf("\nclient-seen outage (GET every 10 ms, 50 ms timeout), %d trials each; %s, %d CPUs:\n\n", c.trials, cpuModel(), runtime.NumCPU())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "system\tfault\tp50\tmax\toutages\tfailed requests\tVIP valid_lft\tdead holder kept the VIP\tload average")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.system, r.fault, ms(r.p50()), ms(slices.Max(r.outages)), list(r.outages), r.failed, r.lifetime, r.leftover, r.load)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("\nvipd's failovers by phase, p50 (max) after the fault, from the new holder's log (ms resolution):\n\n")
	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprint(w, "system\tfault\tlast ok before")
	for _, p := range bed.FailoverPhases {
		fmt.Fprintf(w, "\t%s", p.Name)
	}
	fmt.Fprintln(w, "\tclient ok again")
	for _, r := range rows {
		if len(r.phases) == 0 {
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s", r.system, r.fault, spread(r.phases, "last ok before"))
		for _, p := range bed.FailoverPhases {
			fmt.Fprintf(w, "\t%s", spread(r.phases, p.Name))
		}
		fmt.Fprintf(w, "\t%s\n", spread(r.phases, "client ok again"))
	}
	return w.Flush()
}

// spread is the p50 and max of one phase over a row's trials.
func spread(trials []map[string]time.Duration, phase string) string {
	var ds []time.Duration
	for _, t := range trials {
		if d, ok := t[phase]; ok {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return "-"
	}
	slices.Sort(ds)
	return fmt.Sprintf("%s (%s)", ms(ds[(len(ds)-1)/2]), ms(ds[len(ds)-1]))
}

// cpuModel is /proc/cpuinfo's first model name.
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute load averages.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

type row struct {
	system, fault string
	outages       []time.Duration
	failed        int
	// spread rows: failed requests of the VIPs the dead node did not hold,
	// how many of them moved, and samples with two live holders
	others, othersMoved, twoHolders int
	// spread cut rows: the cut node's VIPs it let go before another node
	// claimed them (of cutVIPs), and how long two live holders lasted
	droppedFirst, cutVIPs int
	twoHolderTime         time.Duration
	lifetime              string // the VIP's kernel valid_lft, the largest seen
	leftover              string
	load                  string                     // load averages when the row's trials ended
	phases                []map[string]time.Duration // vipd: per trial, each phase's time after the fault
}

func (r row) p50() time.Duration {
	x := slices.Clone(r.outages)
	slices.Sort(x)
	return x[(len(x)-1)/2]
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func list(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = ms(d)
	}
	return strings.Join(s, " ")
}

// bedRun is one row's fresh bed: its hosts, its scratch dir, and a
// context for bringing the system up.
type bedRun struct {
	b               *bed.Bed
	dir             string
	nodes, backends []*bed.Host
	up              context.Context
}

// withBed builds a fresh bed for one row (logs kept under c.keepLogs/name,
// if set), starts the backends and runs fn; the bed is torn down after, its
// process logs printed if fn failed.
func withBed(ctx context.Context, c config, name string, fn func(br bedRun) error) (err error) {
	dir, err := os.MkdirTemp("", "benchfailover-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logDir := dir
	if c.keepLogs != "" {
		logDir = fmt.Sprintf("%s/%s", c.keepLogs, name)
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return err
		}
	}
	b, err := bed.New(bed.DefaultHosts(), logDir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			fmt.Fprintf(os.Stderr, "process logs:\n%s", b.Tails(20))
		}
		err = errors.Join(err, b.Close())
	}()
	br := bedRun{b: b, dir: dir, nodes: []*bed.Host{b.Host("n1"), b.Host("n2"), b.Host("n3")}, backends: []*bed.Host{b.Host("b1"), b.Host("b2")}}
	upCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	br.up = upCtx
	if err := bed.StartBackends(upCtx, b, c.backend, br.backends, b.Host("c"), nil); err != nil {
		return err
	}
	return fn(br)
}

// measure builds a fresh bed for one system and fault and runs the trials.
func measure(ctx context.Context, c config, sysName, fault string) (row, error) {
	r := row{system: sysName, fault: fault}
	err := withBed(ctx, c, sysName+"-"+fault, func(br bedRun) error { return measureOn(ctx, c, br, &r) })
	return r, err
}

func measureOn(ctx context.Context, c config, br bedRun, r *row) error {
	b, nodes, backends, upCtx, dir, sysName, fault := br.b, br.nodes, br.backends, br.up, br.dir, r.system, r.fault
	sys, err := startSystem(upCtx, b, c, sysName, nodes, backends, dir)
	if err != nil {
		return err
	}
	s, err := bed.NewSampler(bed.VIP, 10*time.Millisecond, nodes...)
	if err != nil {
		return err
	}
	s.Start()
	defer s.Stop()
	cl := bed.NewClient(b.Host("c"), netip.AddrPortFrom(bed.VIP, bed.FrontendPort).String())
	m := &bed.Meter{Sampler: s, Client: cl, Settle: 1500 * time.Millisecond}
	if _, err := s.WaitSingle(upCtx, m.Settle, ""); err != nil {
		return err
	}
	cl.Start()
	defer cl.Stop()
	if err := cl.WaitFlowing(upCtx, time.Now(), 20); err != nil {
		return err
	}
	var leftovers []string
	for i := range c.trials {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		old, err := s.WaitSingle(tctx, 200*time.Millisecond, "")
		if err != nil {
			cancel()
			return err
		}
		at := time.Now()
		s.Exempt(old, at)
		switch fault {
		case "death":
			// Kill first: a dead node runs nothing after its link drops
			// (keepalived would otherwise see the link go and remove the VIP).
			sys.killNode(old)
			if err := b.Host(old).SetLink(false); err != nil {
				cancel()
				return err
			}
		case "sigkill":
			sys.killDaemon(old)
		default:
			cancel()
			return fmt.Errorf("unknown fault %q (death, sigkill)", fault)
		}
		rec, err := m.Recover(tctx, at, old)
		if err != nil {
			cancel()
			return err
		}
		r.outages = append(r.outages, rec.Outage.Gap)
		r.failed += rec.Outage.Failed
		left := leftover(s, b.Host(old), bed.VIP, at, sys.lifetime())
		leftovers = append(leftovers, left)
		fmt.Printf("%s %s trial %d: VIP %s -> %s, outage %s, moves %d, dead holder kept the VIP %s\n",
			sysName, fault, i+1, old, rec.Holder, rec.Outage, rec.Moves, left)
		if ph, ok, err := sys.phases(rec.Holder, at); err != nil {
			cancel()
			return err
		} else if ok {
			ph["last ok before"] = rec.Outage.From.Sub(at)
			ph["client ok again"] = rec.Outage.To.Sub(at)
			r.phases = append(r.phases, ph)
			fmt.Printf("  phases after the fault: %s\n", phaseLine(ph))
		}
		s.Unexempt(old, time.Now())
		if err := b.Host(old).SetLink(true); err != nil {
			cancel()
			return err
		}
		err = sys.restart(tctx, old)
		if err == nil {
			_, err = s.WaitSingle(tctx, m.Settle, "")
		}
		cancel()
		if err != nil {
			return err
		}
	}
	r.leftover = strings.Join(leftovers, " ")
	r.load = loadAvg()
	if len(leftovers) > 1 && strings.HasPrefix(leftovers[0], "≥") && slices.Equal(leftovers, slices.Repeat(leftovers[:1], len(leftovers))) {
		r.leftover = fmt.Sprintf("%s, every trial", leftovers[0])
	}
	r.lifetime = "forever"
	var most uint32
	for _, n := range nodes {
		if lft, held := s.MaxLifetime(n.Name); held && lft > most {
			most = lft
		}
	}
	if most != bed.InfiniteLifetime {
		r.lifetime = fmt.Sprintf("%ds", most)
	}
	for _, v := range s.Violations() {
		fmt.Printf("%s %s: two live VIP holders: %s\n", sysName, fault, v)
	}
	return nil
}

// leftover waits for the dead holder's vip to go: a lifetime and a second
// for vipd, three seconds for keepalived, after which the VIP is removed by
// hand (what an operator would have to do) so the next trial starts clean.
func leftover(s *bed.Sampler, h *bed.Host, vip netip.Addr, since time.Time, lifetime time.Duration) string {
	wait := 3 * time.Second
	if lifetime > 0 {
		wait = lifetime + time.Second
	}
	for {
		if d, gone := s.Leftover(h.Name, since); gone {
			return ms(d)
		}
		if time.Since(since) > wait {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := h.RemoveAddr(vip); err != nil {
		return fmt.Sprintf("≥%s (remove: %v)", ms(wait), err)
	}
	time.Sleep(30 * time.Millisecond) // let the sampler see it go
	return fmt.Sprintf("≥%s (removed by hand)", ms(wait))
}

// phaseLine is one trial's phases in FailoverPhases order.
func phaseLine(ph map[string]time.Duration) string {
	parts := []string{"last ok " + ms(ph["last ok before"])}
	for _, p := range bed.FailoverPhases {
		if d, ok := ph[p.Name]; ok {
			parts = append(parts, p.Name+" "+ms(d))
		}
	}
	return strings.Join(append(parts, "client ok "+ms(ph["client ok again"])), ", ")
}

func startSystem(ctx context.Context, b *bed.Bed, c config, name string, nodes, backends []*bed.Host, dir string) (system, error) {
	kind, arg, _ := strings.Cut(name, "-")
	switch kind {
	case "vipd":
		o := bed.DefaultVipdOptions(c.vipdBin, nodes, backends, dir)
		if arg != "" {
			o.Timing = arg // StartCluster's vipd --check refuses a profile that is none
		}
		o.Env, o.Sched = c.vipdEnv, c.vipdSched
		cl, err := bed.StartCluster(b, o)
		if err != nil {
			return nil, err
		}
		if _, err := cl.WaitFormed(ctx); err != nil {
			return nil, err
		}
		return vipdSystem{cl}, nil
	case "keepalived":
		advert, err := time.ParseDuration(arg)
		if err != nil {
			return nil, fmt.Errorf("system %q: advert_int %q: %w", name, arg, err)
		}
		k, err := bed.StartKeepalived(b, bed.KeepalivedOptions{Nodes: nodes, Backends: backends, Dir: dir, Advert: advert})
		if err != nil {
			return nil, err
		}
		return keepalivedSystem{k}, nil
	}
	return nil, fmt.Errorf("unknown system %q (vipd-PROFILE, keepalived-ADVERT)", name)
}

type vipdSystem struct{ c *bed.Cluster }

func (v vipdSystem) killDaemon(node string) { v.c.Proc(node).Kill() }
func (v vipdSystem) killNode(node string)   { v.c.Proc(node).Kill() }
func (v vipdSystem) lifetime() time.Duration {
	return v.c.Opts.Lifetime
}

func (v vipdSystem) phases(node string, fault time.Time) (map[string]time.Duration, bool, error) {
	at, err := bed.Phases(v.c.Proc(node).LogPath, fault)
	if err != nil {
		return nil, false, err
	}
	ph := map[string]time.Duration{}
	for name, t := range at {
		ph[name] = t.Sub(fault)
	}
	return ph, true, nil
}

func (v vipdSystem) restart(ctx context.Context, node string) error {
	<-v.c.Proc(node).Done()
	if err := v.c.Start(node); err != nil {
		return err
	}
	_, err := v.c.WaitFormed(ctx)
	return err
}

type keepalivedSystem struct{ k *bed.Keepalived }

func (k keepalivedSystem) killDaemon(node string) { k.k.Proc(node).Kill() }
func (k keepalivedSystem) killNode(node string) {
	k.k.Proc(node).Kill()
	k.k.HAProxy(node).Kill()
	<-k.k.HAProxy(node).Done() // reaped, so restart starts a new one
}
func (k keepalivedSystem) lifetime() time.Duration { return 0 }

func (k keepalivedSystem) phases(string, time.Time) (map[string]time.Duration, bool, error) {
	return nil, false, nil
}

func (k keepalivedSystem) restart(ctx context.Context, node string) error {
	<-k.k.Proc(node).Done()
	if err := k.k.RestartHAProxy(node); err != nil {
		return err
	}
	return k.k.Start(node)
}
