package main

import (
	"net/netip"

	"github.com/vipd/vipd/balancer"
	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/health"
	"github.com/vipd/vipd/vip"
)

// This file turns the validated config into each component's own options,
// so that no component imports config or parses strings.

// The balancer asks health's record of each backend at every pick.
var _ balancer.Health = (*health.Backend)(nil)

// backendRecords hands out health's record of each backend: the running
// Monitor at start, a health.Change on a reload.
type backendRecords interface {
	Backend(pool, addr string) (*health.Backend, error)
}

var (
	_ backendRecords = (*health.Monitor)(nil)
	_ backendRecords = (*health.Change)(nil)
)

// balancerOptions gives every backend health's record of it: health decides
// which backends may take connections, the balancer asks.
func balancerOptions(cfg *config.Config, mon backendRecords) (balancer.Options, error) {
	var opts balancer.Options
	for _, fe := range cfg.Frontends {
		fc := balancer.FrontendConfig{
			Name: fe.Name, Listen: fe.Listen, Pool: fe.Pool,
			MaxConnections: fe.MaxConnections, IdleTimeout: fe.IdleTimeout,
			MaxConnectionsPerSource: fe.MaxConnectionsPerSource,
		}
		if ap := fe.AcceptProxy; len(ap.From) > 0 {
			fc.AcceptProxy = &balancer.AcceptProxyConfig{From: ap.From, Timeout: ap.Timeout}
		}
		opts.Frontends = append(opts.Frontends, fc)
	}
	for _, p := range cfg.Pools {
		pc := balancer.PoolConfig{
			Name: p.Name, Algorithm: p.Algorithm, ConnectTimeout: p.ConnectTimeout,
			ProxyProtocol: p.ProxyProtocol, SlowStart: p.SlowStart,
		}
		for _, b := range p.Backends {
			h, err := mon.Backend(p.Name, b.Address)
			if err != nil {
				return balancer.Options{}, err
			}
			pc.Backends = append(pc.Backends, balancer.BackendConfig{Address: b.Address, Weight: b.Weight, Health: h})
		}
		opts.Pools = append(opts.Pools, pc)
	}
	return opts, nil
}

func healthOptions(cfg *config.Config) health.Options {
	var opts health.Options
	for _, p := range cfg.Pools {
		h := p.Health
		check := health.Check{
			Kind: health.Kind(h.Type), Path: h.Path, Host: h.Host, ExpectBody: h.ExpectBody,
			TLSSkipVerify: h.TLSSkipVerify, ServerName: h.ServerName,
			CAFile: h.CAFile, CertFile: h.CertFile, KeyFile: h.KeyFile,
			Interval: h.Interval, FastInterval: h.FastInterval, Timeout: h.Timeout,
			Rise: h.Rise, Fall: h.Fall, StartHealthy: h.Initial == config.InitialHealthy,
		}
		for _, r := range h.ExpectStatus {
			check.ExpectStatus = append(check.ExpectStatus, health.StatusRange{Min: r.Min, Max: r.Max})
		}
		pc := health.PoolChecks{Pool: p.Name, Check: check, PerVIP: p.Served}
		for _, b := range p.Backends {
			pc.Backends = append(pc.Backends, b.Address)
		}
		opts.Pools = append(opts.Pools, pc)
	}
	return opts
}

// electionOptions passes config's resolved timing: config owns the
// profiles and the rules between the three durations.
func electionOptions(cfg *config.Config) election.Options {
	c := cfg.Cluster
	return election.Options{
		NodeName: cfg.Node.Name, RaftBind: c.RaftBind, GossipBind: c.GossipBind,
		Join: c.Join, BootstrapExpect: c.BootstrapExpect, DataDir: c.DataDir,
		SecretKeys: c.SecretKeys, TLS: raftTLS(c.TLS), Role: election.Role(c.Role),
		Timing: election.Timing{
			Heartbeat: c.Timing.Heartbeat, Election: c.Timing.Election, Lease: c.Timing.Lease,
			WatchLeader: c.Timing.WatchLeader,
		},
		FitnessGrace: c.FitnessGrace, ReconnectTimeout: c.ReconnectTimeout, AdminAddr: cfg.Admin.Listen,
	}
}

// raftTLS is cluster.tls for election: nil when it is not set.
func raftTLS(t config.ClusterTLS) *election.TLSIdentity {
	if !t.Set() {
		return nil
	}
	return &election.TLSIdentity{CertPEM: t.CertPEM, KeyPEM: t.KeyPEM, CAPEM: t.CAPEM}
}

// vipConfig is c as package vip takes it; config has validated it.
func vipConfig(c config.VIP) vip.Config {
	return vip.Config{
		Address: netip.MustParseAddr(c.Address), Interface: c.Interface,
		Lifetime: c.Lifetime, Refresh: c.Refresh,
		AnnounceCount: c.AnnounceCount, AnnounceInterval: c.AnnounceInterval,
	}
}
