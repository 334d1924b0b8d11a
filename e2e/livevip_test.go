package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/bed"
)

// vip2 is the VIP the live reload test adds beside bed.VIP.
var vip2 = netip.MustParseAddr("198.18.0.101")

// liveConfig is node's bed config with these VIPs instead of bed.VIP, and a
// frontend on each, plus extra YAML entries in vips (a bad VIP).
func (e *env) liveConfig(node string, vips []netip.Addr, extra ...string) []byte {
	e.t.Helper()
	cfg, err := bed.VipdConfig(e.cluster.Opts, e.bed.Host(node))
	if err != nil {
		e.t.Fatal(err)
	}
	s := string(cfg)
	from, to := strings.Index(s, "vips:\n"), strings.Index(s, "pools:\n")
	if from < 0 || to < from {
		e.t.Fatalf("test bug: no vips and frontends sections in the bed's config:\n%s", s)
	}
	var b strings.Builder
	b.WriteString("vips:")
	if len(vips)+len(extra) == 0 {
		b.WriteString(" []")
	}
	for _, v := range vips {
		fmt.Fprintf(&b, "\n  - {address: %s, interface: %s, lifetime: %s, refresh: %s}", v, bed.HostIface, e.cluster.Opts.Lifetime, e.cluster.Opts.Refresh)
	}
	for _, x := range extra {
		b.WriteString("\n  - " + x)
	}
	b.WriteString("\nfrontends:")
	for _, v := range vips {
		name := "web" // bed.VIP's, as the bed names it: a renamed frontend could not keep its socket
		if v != bed.VIP {
			name = "web-" + strings.ReplaceAll(v.String(), ".", "-")
		}
		fmt.Fprintf(&b, "\n  - {name: %s, listen: '%s', pool: web}", name, netip.AddrPortFrom(v, bed.FrontendPort))
	}
	if len(vips) == 0 {
		b.WriteString(" []")
	}
	b.WriteString("\n")
	return []byte(s[:from] + b.String() + s[to:])
}

// reloadAll writes every node's config with these VIPs and reloads the
// nodes one by one, the leader last, as docs/operations.md says. It returns
// when the leader's reload was sent and when it answered.
func (e *env) reloadAll(leader string, vips ...netip.Addr) (sent, answered time.Time) {
	e.t.Helper()
	order := slices.DeleteFunc(slices.Clone(e.nodes), func(n string) bool { return n == leader })
	for _, n := range append(order, leader) {
		e.writeConfig(n, e.liveConfig(n, vips))
		sent = time.Now()
		if err := post(e.ctx(10*time.Second), e.bed.Host(n), "/v1/reload"); err != nil {
			e.t.Fatal(err)
		}
		answered = time.Now()
	}
	return sent, answered
}

// writeConfig replaces the file node's daemon was started with, which a
// reload (and a restart) reads.
func (e *env) writeConfig(node string, cfg []byte) {
	e.t.Helper()
	path := filepath.Join(e.cluster.Opts.DataDir, node+".yaml") // where bed.StartCluster writes it
	if _, err := os.Stat(path); err != nil {
		e.t.Fatalf("the config file of %s: %v", node, err)
	}
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// undisturbed checks a VIP that nothing should have touched in [from, to]:
// the sampler saw it on holder alone throughout (not dropped for one 10 ms
// sample, not moved), and no request of its client was refused, reset or
// wrongly answered. Requests that only timed out are a target (none),
// enforced with E2E_STRICT=1: the client runs in the test process, and on a
// shared CI machine a stall of its own misses the 50 ms timeout as surely as
// a stalled path does.
func (e *env) undisturbed(client *bed.Client, s *bed.Sampler, holder, what string, from, to time.Time) {
	e.t.Helper()
	if ch := s.Changes(from, to); len(ch) != 1 || !slices.Equal(ch[0].Holders, []string{holder}) {
		e.t.Errorf("%s: the VIP did not stay on %s alone:\n%s", what, holder, s.Timeline(from, to))
	}
	o, err := client.Outage(from, to)
	if err != nil {
		e.t.Fatal(err)
	}
	if broken := o.Failed - o.TimedOut; broken > 0 {
		e.t.Errorf("%s: %d requests refused, reset or wrongly answered, %d more timed out (longest gap %s)", what, broken, o.TimedOut, o.Gap)
	}
	e.targetCount(what+": requests that timed out", o.TimedOut, 0)
	e.t.Logf("%s: outage %s", what, o)
}

// On a running leader, a reload adds VIP2, which answers through the proxy
// while a client through VIP1 sees no failure; followers only record it,
// and a follower that becomes leader claims both. A reload with a VIP this
// node cannot hold changes nothing. A reload that removes VIP1 leaves it on
// no node while the client through VIP2 sees no failure.
func TestReloadAddsAndRemovesVIPsOnTheLeader(t *testing.T) {
	e := setup(t, "")
	nodes := []*bed.Host{e.bed.Host("n1"), e.bed.Host("n2"), e.bed.Host("n3")}
	sampler2, err := bed.NewSampler(vip2, 10*time.Millisecond, nodes...)
	if err != nil {
		t.Fatal(err)
	}
	sampler2.Start()
	client2 := bed.NewClient(e.bed.Host("c"), netip.AddrPortFrom(vip2, bed.FrontendPort).String())
	t.Cleanup(func() { // before the bed's cleanup, like e.finish
		client2.Stop()
		sampler2.Stop()
		for _, v := range sampler2.Violations() {
			t.Errorf("two live holders of %s: %s", vip2, v)
		}
	})

	// Add VIP2: followers first (they only record it), the leader last.
	leader := e.holder()
	start := time.Now()
	sent, answered := e.reloadAll(leader, bed.VIP, vip2)
	if h, err := sampler2.WaitSingle(e.ctx(10*time.Second), 200*time.Millisecond, ""); err != nil || h != leader {
		t.Fatalf("VIP2 holder %q (%v), want the leader %s", h, err, leader)
	}
	claimed, _ := sampler2.FirstHeld(leader, start)
	if claimed.Before(sent) {
		t.Errorf("VIP2 held on %s at %s, before the leader's reload (%s): a follower's reload made the leader claim it", leader, claimed, sent)
	}
	t.Logf("RESULT add: leader's reload sent to VIP2 seen on it %s (reload answered after %s, sampled every 10ms)",
		claimed.Sub(sent).Round(time.Millisecond), answered.Sub(sent).Round(time.Millisecond))
	client2.Start()
	if err := client2.WaitFlowing(e.ctx(10*time.Second), time.Now(), 20); err != nil {
		t.Fatal(err)
	}
	e.undisturbed(e.client, e.sampler, leader, "client through VIP1 while VIP2 was added", start, time.Now())
	for _, n := range e.nodes {
		st, err := e.cluster.Status(e.ctx(5*time.Second), n)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.VIPs) != 2 {
			t.Errorf("%s lists VIPs %+v, want both", n, st.VIPs)
		}
	}

	// A VIP on an interface no node has: refused, nothing changes.
	before, err := e.cluster.Status(e.ctx(5*time.Second), leader)
	if err != nil {
		t.Fatal(err)
	}
	good := e.liveConfig(leader, []netip.Addr{bed.VIP, vip2})
	e.writeConfig(leader, e.liveConfig(leader, []netip.Addr{bed.VIP, vip2}, "{address: 198.18.0.102, interface: eth9}"))
	h := e.bed.Host(leader)
	code, body, err := h.HTTP(e.ctx(10*time.Second), "POST", netip.AddrPortFrom(h.Addr, bed.AdminPort).String(), "/v1/reload")
	if err != nil || code != 500 || !strings.Contains(body, "vips[2].interface") {
		t.Errorf("reload with a VIP on eth9: HTTP %d %v %.300s, want 500 naming vips[2].interface", code, err, body)
	}
	e.writeConfig(leader, good)
	after, err := e.cluster.Status(e.ctx(5*time.Second), leader)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after.VIPs) != fmt.Sprint(before.VIPs) {
		t.Errorf("the refused reload changed the leader's VIPs from %+v to %+v", before.VIPs, after.VIPs)
	}

	// The leader stops: the follower that takes over claims both VIPs.
	at := time.Now()
	if err := e.cluster.Proc(leader).Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next, outage := e.recovered(at, leader)
	if h, err := sampler2.WaitSingle(e.ctx(10*time.Second), 200*time.Millisecond, leader); err != nil || h != next {
		t.Fatalf("after the handover VIP2 is on %q (%v), want the new leader %s", h, err, next)
	}
	t.Logf("handover %s -> %s: VIP1 outage %s", leader, next, outage)
	if err := e.cluster.Proc(leader).Wait(10 * time.Second); err != nil {
		t.Errorf("vipd on %s after SIGTERM: %v", leader, err)
	}
	e.restart(leader) // from its file, which has both VIPs
	leader = e.holder()
	if h := sampler2.Last().Holders; !slices.Equal(h, []string{leader}) {
		t.Fatalf("VIP2 on %v after the restart, want only the leader %s", h, leader)
	}

	// Remove VIP1: no node has it once the leader's reload answered.
	e.client.Stop()
	start = time.Now()
	_, answered = e.reloadAll(leader, vip2)
	var smp bed.Sample
	for smp = e.sampler.Last(); !smp.At.After(answered); smp = e.sampler.Last() {
		time.Sleep(5 * time.Millisecond) // the sampler reads every 10 ms
	}
	if len(smp.Holders) != 0 {
		t.Errorf("VIP1 on %v in the first sample after the leader's reload that removed it answered", smp.Holders)
	}
	for _, n := range e.nodes {
		st, err := e.cluster.Status(e.ctx(5*time.Second), n)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.VIPs) != 1 || st.VIPs[0].Address != vip2.String() {
			t.Errorf("%s lists VIPs %+v, want only %s", n, st.VIPs, vip2)
		}
	}
	e.undisturbed(client2, sampler2, leader, "client through VIP2 while VIP1 was removed", start, time.Now())
	if h := sampler2.Last().Holders; !slices.Equal(h, []string{leader}) {
		t.Errorf("VIP2 on %v after VIP1's removal, want the leader %s", h, leader)
	}
}
