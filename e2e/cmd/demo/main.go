// Command demo shows a vipd failover live on a namespace test bed: three vipd
// nodes, two demo backends and a client sending a request to the VIP every
// 10 ms. It prints which node holds the VIP and which backends answer, kills
// the leader node (SIGKILL and link down), prints the measured failover, and
// tears everything down.
//
// With -spread (make demo-spread) the cluster has three VIPs of placement
// spread instead, one client for each: every node holds one, and a
// follower's death (-kill leader: the leader's) moves only its VIP, once its
// lease has surely run out.
//
// It uses the built bin/vipd and bin/demo-backend (`make demo` builds them
// first) and needs root: it creates network namespaces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vipd/vipd/e2e/bed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	vipdBin := flag.String("vipd", "bin/vipd", "vipd binary")
	backendBin := flag.String("backend", "bin/demo-backend", "demo backend binary")
	before := flag.Duration("before", 4*time.Second, "how long to watch before killing the leader")
	after := flag.Duration("after", 5*time.Second, "how long to watch after killing the leader")
	spread := flag.Bool("spread", false, "three VIPs of placement spread, one per node, instead of one on the leader")
	kill := flag.String("kill", "follower", "with -spread: the node whose death is shown, follower or leader")
	flag.Parse()
	if *kill != "follower" && *kill != "leader" {
		return fmt.Errorf("-kill %q: want follower or leader", *kill)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it builds network namespaces (try sudo make demo)")
	}
	for _, p := range []string{*vipdBin, *backendBin} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing: run make build first", p)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := bed.SweepStale(); err != nil {
		fmt.Fprintln(os.Stderr, "sweep stale namespaces:", err)
	}
	dir, err := os.MkdirTemp("", "vipd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b, err := newBed(dir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			fmt.Fprintf(os.Stderr, "process logs:\n%s", b.Tails(20))
		}
		err = errors.Join(err, b.Close())
		fmt.Println("torn down: every namespace and process of the demo is gone")
	}()
	if *spread {
		return demoSpread(ctx, b, dir, *vipdBin, *backendBin, *before, *after, *kill == "leader")
	}
	return demo(ctx, b, dir, *vipdBin, *backendBin, *before, *after)
}

func newBed(dir string) (*bed.Bed, error) {
	fmt.Println("building the bed: namespaces n1 n2 n3 (vipd, 198.18.0.11-13), b1 b2 (backends, .21 .22), c (client, .2), one bridge")
	return bed.New(bed.DefaultHosts(), dir)
}

// startCluster starts the backends and the three daemons, each rendering
// its config with render (nil: the bed's one leader VIP), and waits until
// they formed a cluster.
func startCluster(ctx context.Context, b *bed.Bed, dir, vipdBin, backendBin string,
	render func(bed.VipdOptions, *bed.Host) ([]byte, error)) (*bed.Cluster, string, error) {
	nodes := []*bed.Host{b.Host("n1"), b.Host("n2"), b.Host("n3")}
	backends := []*bed.Host{b.Host("b1"), b.Host("b2")}
	if err := bed.StartBackends(ctx, b, backendBin, backends, b.Host("c"), nil); err != nil {
		return nil, "", err
	}
	opts := bed.DefaultVipdOptions(vipdBin, nodes, backends, dir)
	opts.Render = render
	cluster, err := bed.StartCluster(b, opts)
	if err != nil {
		return nil, "", err
	}
	leader, err := cluster.WaitFormed(ctx)
	return cluster, leader, err
}

func demo(ctx context.Context, b *bed.Bed, dir, vipdBin, backendBin string, before, after time.Duration) error {
	nodes := []*bed.Host{b.Host("n1"), b.Host("n2"), b.Host("n3")}
	upCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cluster, leader, err := startCluster(upCtx, b, dir, vipdBin, backendBin, nil)
	if err != nil {
		return err
	}
	opts := cluster.Opts
	fmt.Printf("cluster formed, raft leader %s; VIP %s lifetime %s refreshed every %s\n", leader, bed.VIP, opts.Lifetime, opts.Refresh)
	s, err := bed.NewSampler(bed.VIP, 10*time.Millisecond, nodes...)
	if err != nil {
		return err
	}
	s.Start()
	defer s.Stop()
	cl := bed.NewClient(b.Host("c"), netip.AddrPortFrom(bed.VIP, bed.FrontendPort).String())
	m := &bed.Meter{Sampler: s, Client: cl, Settle: 1500 * time.Millisecond}
	if _, err := s.WaitSingle(upCtx, 500*time.Millisecond, ""); err != nil {
		return err
	}
	cl.Start()
	defer cl.Stop()
	fmt.Printf("client: GET http://%s:%d/ every 10 ms, 50 ms timeout\n\n", bed.VIP, bed.FrontendPort)

	start := time.Now()
	if err := watch(ctx, s, cl, start, before, ""); err != nil {
		return err
	}
	old, err := s.WaitSingle(ctx, 100*time.Millisecond, "")
	if err != nil {
		return err
	}
	fmt.Printf("\n>>> killing the leader node %s: SIGKILL to its vipd, then its link goes down\n\n", old)
	at := time.Now()
	s.Exempt(old, at)
	cluster.Proc(old).Kill()
	if err := b.Host(old).SetLink(false); err != nil {
		return err
	}
	watchCtx, cancelWatch := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() { watched <- watch(watchCtx, s, cl, start, after, old) }()
	rctx, cancelRecover := context.WithTimeout(ctx, 30*time.Second)
	rec, rerr := m.Recover(rctx, at, old)
	cancelRecover()
	if werr := <-watched; werr != nil && rerr == nil {
		rerr = werr
	}
	cancelWatch()
	if rerr != nil {
		return rerr
	}
	left, gone := s.Leftover(old, at)
	fmt.Printf("\nfailover: VIP %s -> %s, first claimed %s after the kill\n", old, rec.Holder, ms(rec.Claimed.Sub(at)))
	fmt.Printf("client-seen outage: %s (last answer before the kill to the first after), %d requests failed\n", ms(rec.Outage.Gap), rec.Outage.Failed)
	if gone {
		fmt.Printf("the dead node's VIP was removed by the kernel %s after the kill (lifetime %s)\n", ms(left), opts.Lifetime)
	} else {
		fmt.Printf("the dead node still had its VIP %s after the kill (lifetime %s)\n", ms(left), opts.Lifetime)
	}
	if v := s.Violations(); len(v) > 0 {
		return fmt.Errorf("two live VIP holders: %v", v)
	}
	fmt.Println("never two live holders")
	mac, _, err := b.Host("c").Neighbour(bed.VIP)
	if err == nil {
		fmt.Printf("client's neighbour entry for the VIP: %s (%s's MAC: %s)\n", mac, rec.Holder, b.Host(rec.Holder).MAC)
	}
	return nil
}

// watch prints, every 250 ms for d, who holds the VIP and which backends
// answered in that window. The dead node, if any, is marked: the address
// left in its namespace until the kernel lifetime runs out serves no one.
func watch(ctx context.Context, s *bed.Sampler, cl *bed.Client, start time.Time, d time.Duration, dead string) error {
	return every(ctx, d, func(from, now time.Time) {
		answers := cl.Backends(from, now)
		failed := 0
		for _, r := range cl.Results() {
			if !r.OK() && r.End.After(from) && !r.End.After(now) {
				failed++
			}
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(answers)) {
			parts = append(parts, fmt.Sprintf("%s×%d", k, answers[k]))
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Printf("[%6.2fs] VIP on %-11s answers: %-16s failed: %d\n", now.Sub(start).Seconds(), holderNames(s, dead), strings.Join(parts, " "), failed)
	})
}

// every calls show every 250 ms for d with the window since its last call.
func every(ctx context.Context, d time.Duration, show func(from, now time.Time)) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	end := time.Now().Add(d)
	from := time.Now()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			show(from, now)
			from = now
		}
	}
	return nil
}

// holderNames is the sampler's latest holders, the dead node marked, or "-".
func holderNames(s *bed.Sampler, dead string) string {
	var holders []string
	for _, n := range s.Last().Holders {
		if n == dead {
			n += "(dead)"
		}
		holders = append(holders, n)
	}
	if len(holders) == 0 {
		return "-"
	}
	return strings.Join(holders, " ")
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
