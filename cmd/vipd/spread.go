package main

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/health"
	"github.com/vipd/vipd/lease"
	"github.com/vipd/vipd/ownership"
	"github.com/vipd/vipd/placement"
	"github.com/vipd/vipd/spread"
)

// newSpread builds the spread runner over the election and the Owners of
// the spread VIPs, and makes it the server of lease connections on the
// Raft port. Its constants come from the Raft heartbeat (lease.Derive).
func newSpread(d *daemon, cfg *config.Config, owners *ownership.Group) (*spread.Runner, error) {
	m, err := spread.NewMetrics(d.reg)
	if err != nil {
		return nil, fmt.Errorf("spread metrics: %w", err)
	}
	r, err := spread.New(spread.Options{
		Node: cfg.Node.Name, Timing: lease.Derive(cfg.Cluster.Timing.Heartbeat), Cluster: d.node,
		Holds:     spreadHolds{owners: owners},
		VIPs:      func() []placement.VIP { return spreadVIPs(d.running()) },
		Rebalance: func() string { return d.running().Cluster.Rebalance },
		Healthy:   func() []string { return d.eligible(healthyFrontends(d.running(), d.mon.Status())) },
		Metrics:   m, Logger: d.log.Named("spread"),
	})
	if err != nil {
		return nil, err
	}
	d.node.ServeLeases(r.ServeConn)
	return r, nil
}

// spreadKey is a VIP's name in the lease protocol and the replicated
// assignment: its address in canonical form, the same on every node
// however the config writes it.
func spreadKey(address string) string {
	a, err := netip.ParseAddr(address)
	if err != nil {
		return address // config validated it; a status entry is already canonical
	}
	return a.String()
}

// spreadVIPs is the config's VIPs as placement sees them, with the
// frontends that listen on each (its holder needs a healthy backend for
// every one).
func spreadVIPs(cfg *config.Config) []placement.VIP {
	var out []placement.VIP
	for _, v := range cfg.VIPs {
		if v.Placement != config.PlacementSpread {
			continue
		}
		pv := placement.VIP{Address: spreadKey(v.Address), Placement: placement.Spread, Prefer: v.Prefer}
		for _, fe := range cfg.Frontends {
			if host, _, err := net.SplitHostPort(fe.Listen); err == nil && spreadKey(host) == pv.Address {
				pv.Frontends = append(pv.Frontends, fe.Name)
			}
		}
		out = append(out, pv)
	}
	return out
}

// spreadPlacements maps each VIP (canonical) to its placement.
func spreadPlacements(cfg *config.Config) map[string]string {
	out := map[string]string{}
	for _, v := range cfg.VIPs {
		out[spreadKey(v.Address)] = v.Placement
	}
	return out
}

// healthyFrontends lists the frontends whose pool has a healthy backend here.
func healthyFrontends(cfg *config.Config, pools []health.PoolHealth) []string {
	healthy := map[string]bool{}
	for _, p := range pools {
		healthy[p.Name] = slices.ContainsFunc(p.Backends, func(b health.BackendHealth) bool { return b.Healthy })
	}
	var out []string
	for _, fe := range cfg.Frontends {
		if healthy[fe.Pool] {
			out = append(out, fe.Name)
		}
	}
	return out
}

// spreadHolds is spread.Holds over the Owners of the spread VIPs.
type spreadHolds struct{ owners *ownership.Group }

// Hold starts the VIP's hold; the claim runs on its own.
func (h spreadHolds) Hold(vip string) { _, _ = h.owners.Send(vip, true) }

// Release returns once the VIP's address is gone. An Owner that is not
// there (removed by a reload, or every Owner stopped) holds nothing.
func (h spreadHolds) Release(vip string) {
	if done, err := h.owners.Send(vip, false); err == nil {
		<-done
	}
}
