package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vipd/vipd/e2e/bed"
)

// runSpread measures the spread scenario for every system and prints its
// tables: node deaths, then cuts.
func runSpread(ctx context.Context, c config) error {
	var deaths, cuts []row
	for _, s := range c.systems {
		for _, f := range spreadFaults(s, c.spreadFaults) {
			r, err := measureSpread(ctx, c, s, f)
			if err != nil {
				return fmt.Errorf("%s spread, %s: %w", s, f, err)
			}
			if isCut(f) {
				cuts = append(cuts, r)
			} else {
				deaths = append(deaths, r)
			}
		}
	}
	if len(deaths) > 0 {
		fmt.Printf("\nthree VIPs, one per node; a node dies: outage of each VIP it held (GET every 10 ms, 50 ms timeout), %d trials each; %s, %d CPUs:\n\n", c.trials, cpuModel(), runtime.NumCPU())
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "system\tfault\tp50\tmax\toutages\tits failed requests\tother VIPs' failed requests\tother VIPs moved\tsamples with two holders\tload average")
		for _, r := range deaths {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", r.system, r.fault, ms(r.p50()), ms(slices.Max(r.outages)), list(r.outages),
				r.failed, r.others, r.othersMoved, r.twoHolders, r.load)
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	if len(cuts) > 0 {
		fmt.Printf("\nthree VIPs, one per node; a node cut off for %s with its link up (nftables drops every frame): its VIPs, %d trials each; %s, %d CPUs:\n\n", cutFor, c.trials, cpuModel(), runtime.NumCPU())
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "system\tfault\tclient outage p50\tmax\toutages\tcut node let go first\ttwo live holders (samples, time)\tother VIPs: holder changes\tload average")
		for _, r := range cuts {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d of %d\t%d, %s\t%d\t%s\n", r.system, r.fault, ms(r.p50()), ms(slices.Max(r.outages)), list(r.outages),
				r.droppedFirst, r.cutVIPs, r.twoHolders, ms(r.twoHolderTime), r.othersMoved, r.load)
		}
		return w.Flush()
	}
	return nil
}

// spreadFaults are the faults of the spread scenario of the given kinds
// (death, cut): vipd tells a follower's from the leader's (they take
// different paths: a lease that must run out, a Raft failover);
// keepalived's nodes are all alike.
func spreadFaults(sysName string, kinds []string) []string {
	var out []string
	for _, k := range kinds {
		if strings.HasPrefix(sysName, "keepalived") {
			out = append(out, k)
		} else {
			out = append(out, "follower-"+k, "leader-"+k)
		}
	}
	return out
}

// isCut reports whether a spread fault cuts the node off (rather than
// killing it).
func isCut(fault string) bool { return fault == "cut" || strings.HasSuffix(fault, "-cut") }

// cutFor is how long a cut lasts: longer than any system's takeover, so
// what each does while cut off is seen whole.
const cutFor = 3 * time.Second

// spreadVIP is one VIP of the spread bed with its sampler and client.
type spreadVIP struct {
	addr    netip.Addr
	sampler *bed.Sampler
	client  *bed.Client
}

// measureSpread builds a fresh bed with the three VIPs of bed.SpreadVIPs
// spread over the nodes (vipd: placement spread; keepalived: one VRRP
// instance each, every node the preferred master of one) and runs the
// trials of one node death: the outage of each VIP the dead node held, and
// the failed requests of the others, which should see none.
func measureSpread(ctx context.Context, c config, sysName, fault string) (row, error) {
	r := row{system: sysName + " spread", fault: fault}
	err := withBed(ctx, c, sysName+"-spread-"+fault, func(br bedRun) error { return measureSpreadOn(ctx, c, br, sysName, &r) })
	return r, err
}

func measureSpreadOn(ctx context.Context, c config, br bedRun, sysName string, r *row) error {
	b, nodes, backends, upCtx, dir, fault := br.b, br.nodes, br.backends, br.up, br.dir, r.fault
	sys, err := startSpreadSystem(upCtx, b, c, sysName, nodes, backends, dir)
	if err != nil {
		return err
	}
	var vips []*spreadVIP
	for _, a := range bed.SpreadVIPs {
		s, err := bed.NewSampler(a, 10*time.Millisecond, nodes...)
		if err != nil {
			return err
		}
		s.Start()
		defer s.Stop()
		v := &spreadVIP{addr: a, sampler: s, client: bed.NewClient(b.Host("c"), netip.AddrPortFrom(a, bed.FrontendPort).String())}
		vips = append(vips, v)
	}
	if err := balanced(upCtx, vips); err != nil {
		return err
	}
	for _, v := range vips {
		v.client.Start()
		defer v.client.Stop()
		if err := v.client.WaitFlowing(upCtx, time.Now(), 20); err != nil {
			return fmt.Errorf("%s: %w", v.addr, err)
		}
	}
	for i := range c.trials {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		trial := spreadTrial
		if isCut(fault) {
			trial = cutTrial
		}
		err := trial(tctx, r, b, sys, vips, sysName, fault, i)
		cancel()
		if err != nil {
			return fmt.Errorf("trial %d: %w", i+1, err)
		}
	}
	r.load = loadAvg()
	for _, v := range vips {
		for _, x := range v.sampler.Violations() {
			r.twoHolders++
			r.twoHolderTime += x.To.Sub(x.From) + 10*time.Millisecond // a run of samples lasts one interval past its last
			fmt.Printf("%s %s: two live holders of %s: %s\n", r.system, fault, v.addr, x)
		}
	}
	return nil
}

// pickVictim waits until every VIP has one holder, and picks the node a
// trial's fault hits.
func pickVictim(ctx context.Context, sys spreadSystem, vips []*spreadVIP, fault string, trial int) (map[netip.Addr]string, string, error) {
	holders := map[netip.Addr]string{}
	for _, v := range vips {
		h, err := v.sampler.WaitSingle(ctx, 200*time.Millisecond, "")
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", v.addr, err)
		}
		holders[v.addr] = h
	}
	victim, err := sys.victim(ctx, fault, holders, trial)
	return holders, victim, err
}

// spreadTrial kills one node, measures, and brings the bed back to one VIP
// on each node.
func spreadTrial(ctx context.Context, r *row, b *bed.Bed, sys spreadSystem, vips []*spreadVIP, sysName, fault string, trial int) error {
	holders, victim, err := pickVictim(ctx, sys, vips, fault, trial)
	if err != nil {
		return err
	}
	at := time.Now()
	for _, v := range vips {
		v.sampler.Exempt(victim, at)
	}
	sys.killNode(victim) // first: a dead node runs nothing after its link drops
	if err := b.Host(victim).SetLink(false); err != nil {
		return err
	}
	var lines []string
	for _, v := range vips {
		if holders[v.addr] != victim {
			continue
		}
		m := &bed.Meter{Sampler: v.sampler, Client: v.client, Settle: 1500 * time.Millisecond}
		rec, err := m.Recover(ctx, at, victim)
		if err != nil {
			return fmt.Errorf("%s: %w", v.addr, err)
		}
		r.outages = append(r.outages, rec.Outage.Gap)
		r.failed += rec.Outage.Failed
		lines = append(lines, fmt.Sprintf("%s %s -> %s, outage %s", v.addr, victim, rec.Holder, rec.Outage))
	}
	time.Sleep(time.Second) // the others' window: the failover and after
	for _, v := range vips {
		if holders[v.addr] == victim {
			continue
		}
		o, err := v.client.Outage(at, time.Now())
		if err != nil {
			return fmt.Errorf("%s: %w", v.addr, err)
		}
		r.others += o.Failed
		moved := ""
		if n := len(v.sampler.Changes(at, time.Time{})) - 1; n > 0 {
			r.othersMoved++
			moved = fmt.Sprintf(", MOVED %d times", n)
		}
		lines = append(lines, fmt.Sprintf("%s stayed on %s: %d failed%s", v.addr, holders[v.addr], o.Failed, moved))
	}
	for _, v := range vips {
		if holders[v.addr] == victim {
			lines = append(lines, fmt.Sprintf("the dead node kept %s %s", v.addr, leftover(v.sampler, b.Host(victim), v.addr, at, sys.lifetime())))
		}
	}
	fmt.Printf("%s spread %s trial %d (%s): %s\n", sysName, fault, trial+1, victim, strings.Join(lines, "; "))
	for _, v := range vips {
		v.sampler.Unexempt(victim, time.Now())
	}
	if err := b.Host(victim).SetLink(true); err != nil {
		return err
	}
	if err := sys.restart(ctx, victim); err != nil {
		return err
	}
	if err := sys.rebalance(ctx, vips); err != nil {
		return err
	}
	return balanced(ctx, vips)
}

// cutTrial cuts one node off for cutFor with its link up (it cannot tell,
// and nothing exempts its addresses from the samplers), measures what
// became of each VIP it held (did it let go before another node claimed
// it, and the client's outage), heals the cut and brings the bed back to
// one VIP on each node. Two live holders, counted over the whole row, are
// what this scenario looks for.
func cutTrial(ctx context.Context, r *row, b *bed.Bed, sys spreadSystem, vips []*spreadVIP, sysName, fault string, trial int) error {
	holders, victim, err := pickVictim(ctx, sys, vips, fault, trial)
	if err != nil {
		return err
	}
	h := b.Host(victim)
	at := time.Now()
	if err := h.Isolate(); err != nil {
		return err
	}
	healed := false
	defer func() {
		if !healed {
			_ = h.Unisolate()
		}
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(cutFor):
	}
	var lines []string
	for _, v := range vips {
		if holders[v.addr] != victim {
			if n := len(v.sampler.Changes(at, time.Time{})) - 1; n > 0 {
				r.othersMoved++
				lines = append(lines, fmt.Sprintf("%s of %s MOVED %d times", v.addr, holders[v.addr], n))
			}
			continue
		}
		r.cutVIPs++
		o, err := v.client.Outage(at, time.Now())
		if err != nil {
			return fmt.Errorf("%s: %w", v.addr, err)
		}
		r.outages = append(r.outages, o.Gap)
		r.failed += o.Failed
		dropped, _ := v.sampler.LastHeld(victim, at)
		claimer, claimed := "", time.Time{}
		for _, n := range []string{"n1", "n2", "n3"} {
			if c, ok := v.sampler.FirstHeld(n, at); n != victim && ok && (claimed.IsZero() || c.Before(claimed)) {
				claimer, claimed = n, c
			}
		}
		still := slices.Contains(v.sampler.Last().Holders, victim)
		switch {
		case claimer == "":
			lines = append(lines, fmt.Sprintf("%s: no other node claimed it, outage %s", v.addr, o))
		case !still && dropped.Before(claimed):
			r.droppedFirst++
			lines = append(lines, fmt.Sprintf("%s: %s let go at +%s, %s claimed at +%s, outage %s", v.addr, victim, ms(dropped.Sub(at)), claimer, ms(claimed.Sub(at)), o))
		case still:
			lines = append(lines, fmt.Sprintf("%s: %s KEPT it through the cut, %s claimed at +%s, outage %s", v.addr, victim, claimer, ms(claimed.Sub(at)), o))
		default:
			lines = append(lines, fmt.Sprintf("%s: %s let go at +%s, AFTER %s claimed at +%s, outage %s", v.addr, victim, ms(dropped.Sub(at)), claimer, ms(claimed.Sub(at)), o))
		}
	}
	fmt.Printf("%s spread %s trial %d (%s): %s\n", sysName, fault, trial+1, victim, strings.Join(lines, "; "))
	if err := h.Unisolate(); err != nil {
		return err
	}
	healed = true
	if err := sys.rebalance(ctx, vips); err != nil {
		return err
	}
	return balanced(ctx, vips)
}

// isBalanced reports whether every VIP has one live holder, each a
// different node.
func isBalanced(vips []*spreadVIP) bool {
	seen := map[string]bool{}
	for _, v := range vips {
		if h := v.sampler.Last().Holders; len(h) == 1 {
			seen[h[0]] = true
		}
	}
	return len(seen) == len(vips)
}

// balanced waits until isBalanced.
func balanced(ctx context.Context, vips []*spreadVIP) error {
	for !isBalanced(vips) {
		select {
		case <-ctx.Done():
			var on []string
			for _, v := range vips {
				on = append(on, fmt.Sprintf("%s on %v", v.addr, v.sampler.Last().Holders))
			}
			return fmt.Errorf("the VIPs did not spread one per node: %s: %w", strings.Join(on, ", "), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// spreadSystem is a system of the spread scenario.
type spreadSystem interface {
	killNode(node string)
	restart(ctx context.Context, node string) error
	lifetime() time.Duration
	// victim picks the node a trial's fault kills.
	victim(ctx context.Context, fault string, holders map[netip.Addr]string, trial int) (string, error)
	// rebalance puts one VIP back on each node after a restart.
	rebalance(ctx context.Context, vips []*spreadVIP) error
}

func startSpreadSystem(ctx context.Context, b *bed.Bed, c config, name string, nodes, backends []*bed.Host, dir string) (spreadSystem, error) {
	kind, arg, _ := strings.Cut(name, "-")
	switch kind {
	case "vipd":
		o := bed.DefaultVipdOptions(c.vipdBin, nodes, backends, dir)
		o.Timing, o.Render = arg, bed.SpreadConfig
		o.Env, o.Sched = c.vipdEnv, c.vipdSched
		cl, err := bed.StartCluster(b, o)
		if err != nil {
			return nil, err
		}
		if _, err := cl.WaitFormed(ctx); err != nil {
			return nil, err
		}
		return vipdSpread{vipdSystem{cl}, b, filepath.Join(filepath.Dir(c.vipdBin), "vipctl")}, nil
	case "keepalived":
		advert, err := time.ParseDuration(arg)
		if err != nil {
			return nil, fmt.Errorf("system %q: advert_int %q: %w", name, arg, err)
		}
		k, err := bed.StartKeepalived(b, bed.KeepalivedOptions{Nodes: nodes, Backends: backends, Dir: dir, Advert: advert, VIPs: bed.SpreadVIPs})
		if err != nil {
			return nil, err
		}
		return keepalivedSpread{keepalivedSystem{k}}, nil
	}
	return nil, fmt.Errorf("unknown system %q (vipd-PROFILE, keepalived-ADVERT)", name)
}

type vipdSpread struct {
	vipdSystem
	bed    *bed.Bed
	vipctl string
}

func (v vipdSpread) victim(ctx context.Context, fault string, holders map[netip.Addr]string, trial int) (string, error) {
	leader, err := v.c.WaitFormed(ctx)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(fault, "leader-") {
		return leader, nil
	}
	var followers []string
	for _, h := range holders {
		if h != leader && !slices.Contains(followers, h) {
			followers = append(followers, h)
		}
	}
	if len(followers) == 0 {
		return "", fmt.Errorf("no follower holds a VIP (leader %s, holders %v)", leader, holders)
	}
	slices.Sort(followers)
	return followers[trial%len(followers)], nil
}

// rebalance moves VIPs onto the node that holds none (placement is sticky:
// a restarted node gets nothing by itself) with vipctl move, until each
// node holds one. A move the leader refuses (the restarted node not yet
// renewing, so not yet fit) is tried again.
func (v vipdSpread) rebalance(ctx context.Context, vips []*spreadVIP) error {
	for !isBalanced(vips) {
		count := map[string][]netip.Addr{"n1": nil, "n2": nil, "n3": nil}
		for _, sv := range vips {
			if h := sv.sampler.Last().Holders; len(h) == 1 {
				count[h[0]] = append(count[h[0]], sv.addr)
			}
		}
		var empty, crowded string
		for n, on := range count {
			switch {
			case len(on) == 0:
				empty = n
			case len(on) > 1:
				crowded = n
			}
		}
		if empty != "" && crowded != "" {
			if err := v.move(ctx, count[crowded][0], empty); err != nil {
				fmt.Printf("  rebalance: %v (trying again)\n", err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rebalance: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// move runs vipctl move against the leader.
func (v vipdSpread) move(ctx context.Context, vip netip.Addr, node string) error {
	leader, err := v.c.WaitFormed(ctx)
	if err != nil {
		return err
	}
	h := v.bed.Host(leader)
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", h.NS, v.vipctl, "--admin",
		netip.AddrPortFrom(h.Addr, bed.AdminPort).String(), "move", vip.String(), node).CombinedOutput()
	if err != nil {
		return fmt.Errorf("vipctl move %s %s: %w: %s", vip, node, err, strings.TrimSpace(string(out)))
	}
	return nil
}

type keepalivedSpread struct{ keepalivedSystem }

// victim is the holder of VIP trial mod 3: each node in turn.
func (k keepalivedSpread) victim(_ context.Context, _ string, holders map[netip.Addr]string, trial int) (string, error) {
	return holders[bed.SpreadVIPs[trial%len(bed.SpreadVIPs)]], nil
}

// rebalance is keepalived's own: the restarted node preempts its VIP back.
func (k keepalivedSpread) rebalance(context.Context, []*spreadVIP) error { return nil }
