package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/vipd/vipd/e2e/bed"
)

// spreadVIP is one spread VIP of the demo: who holds it, and a client
// sending to its frontend.
type spreadVIP struct {
	addr    netip.Addr
	sampler *bed.Sampler
	client  *bed.Client
}

// demoSpread runs the spread demo: three VIPs of placement spread, one on
// each node, then one node's death (a follower's, or the leader's), after
// which only that node's VIP moves.
func demoSpread(ctx context.Context, b *bed.Bed, dir, vipdBin, backendBin string, before, after time.Duration, killLeader bool) error {
	nodes := []*bed.Host{b.Host("n1"), b.Host("n2"), b.Host("n3")}
	upCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cluster, leader, err := startCluster(upCtx, b, dir, vipdBin, backendBin, bed.SpreadConfig)
	if err != nil {
		return err
	}
	fmt.Printf("cluster formed, raft leader %s; VIPs %v, placement spread, each with its own frontend on port %d\n",
		leader, bed.SpreadVIPs, bed.FrontendPort)
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
	for _, v := range vips {
		if _, err := v.sampler.WaitSingle(upCtx, 500*time.Millisecond, ""); err != nil {
			return fmt.Errorf("%s: %w", v.addr, err)
		}
		v.client.Start()
		defer v.client.Stop()
	}
	fmt.Println("clients: a GET to each VIP every 10 ms, 50 ms timeout")
	fmt.Println()

	start := time.Now()
	if err := watchSpread(ctx, vips, start, before, ""); err != nil {
		return err
	}
	if leader, err = cluster.WaitFormed(upCtx); err != nil {
		return err
	}
	holders := map[netip.Addr]string{}
	victim := ""
	for _, v := range vips {
		h, err := v.sampler.WaitSingle(ctx, 100*time.Millisecond, "")
		if err != nil {
			return fmt.Errorf("%s: %w", v.addr, err)
		}
		holders[v.addr] = h
		if (h == leader) == killLeader && victim == "" {
			victim = h
		}
	}
	if victim == "" {
		return fmt.Errorf("no VIP on a %s to show: holders %v, leader %s", map[bool]string{true: "leader", false: "follower"}[killLeader], holders, leader)
	}
	role := "follower"
	if victim == leader {
		role = "leader"
	}
	fmt.Printf("\n>>> killing the %s node %s: SIGKILL to its vipd, then its link goes down\n\n", role, victim)
	at := time.Now()
	for _, v := range vips {
		v.sampler.Exempt(victim, at)
	}
	cluster.Proc(victim).Kill()
	if err := b.Host(victim).SetLink(false); err != nil {
		return err
	}
	watchCtx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	watched := make(chan error, 1)
	go func() { watched <- watchSpread(watchCtx, vips, start, after, victim) }()
	var report []string
	for _, v := range vips {
		if holders[v.addr] != victim {
			continue
		}
		rctx, cancelRecover := context.WithTimeout(ctx, 30*time.Second)
		m := &bed.Meter{Sampler: v.sampler, Client: v.client, Settle: 1500 * time.Millisecond}
		rec, err := m.Recover(rctx, at, victim)
		cancelRecover()
		if err != nil {
			return fmt.Errorf("%s: %w", v.addr, err)
		}
		report = append(report, fmt.Sprintf("%s moved %s -> %s, claimed %s after the kill; client-seen outage %s, %d requests failed",
			v.addr, victim, rec.Holder, ms(rec.Claimed.Sub(at)), ms(rec.Outage.Gap), rec.Outage.Failed))
	}
	if err := <-watched; err != nil {
		return err
	}
	fmt.Println()
	for _, r := range report {
		fmt.Println(r)
	}
	for _, v := range vips {
		if holders[v.addr] == victim {
			continue
		}
		o, err := v.client.Outage(at, time.Now())
		if err != nil {
			return fmt.Errorf("%s: %w", v.addr, err)
		}
		moves := len(v.sampler.Changes(at, time.Time{})) - 1
		fmt.Printf("%s stayed on %s: %d holder changes, %d requests failed (longest gap %s)\n", v.addr, holders[v.addr], moves, o.Failed, ms(o.Gap))
	}
	for _, v := range vips {
		if x := v.sampler.Violations(); len(x) > 0 {
			return fmt.Errorf("two live holders of %s: %v", v.addr, x)
		}
	}
	fmt.Println("never two live holders of any VIP")
	return nil
}

// watchSpread prints, every 250 ms for d, which node holds each VIP and how
// many of its requests in that window were answered and failed.
func watchSpread(ctx context.Context, vips []*spreadVIP, start time.Time, d time.Duration, dead string) error {
	return every(ctx, d, func(from, now time.Time) {
		var parts []string
		for _, v := range vips {
			ok, failed := 0, 0
			for _, r := range v.client.Results() {
				switch {
				case !r.End.After(from) || r.End.After(now):
				case r.OK():
					ok++
				default:
					failed++
				}
			}
			parts = append(parts, fmt.Sprintf("%s on %-8s ok %2d failed %2d", v.addr, holderNames(v.sampler, dead), ok, failed))
		}
		fmt.Printf("[%6.2fs] %s\n", now.Sub(start).Seconds(), strings.Join(parts, " | "))
	})
}
