package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vipd/vipd/addrpool"
)

// validateKubernetes checks the kubernetes section of a file, and that the
// file's own VIPs and frontends stay off its pools.
func (v *validator) validateKubernetes(c *Config) {
	k := c.Kubernetes
	if !v.set["kubernetes"] {
		return
	}
	if k.Interface == "" {
		v.bad("kubernetes.interface", "", "required: the interface that carries the Services' VIPs")
	} else if len(k.Interface) > 15 || slices.ContainsFunc([]byte(k.Interface), func(b byte) bool { return b == '/' || b == ' ' }) {
		v.bad("kubernetes.interface", k.Interface, "not an interface name")
	}
	if k.Kubeconfig != "" {
		if _, err := os.Stat(k.Kubeconfig); err != nil {
			v.bad("kubernetes.kubeconfig", k.Kubeconfig, "cannot read: %v", errors.Unwrap(err))
		}
	}
	if len(k.AddressPools) == 0 {
		v.bad("kubernetes.address_pools", "", "at least one pool is required: Services take their addresses from them")
		return
	}
	pools, ok := v.addressPools(k.AddressPools)
	if !ok {
		return
	}
	if _, err := addrpool.New(pools); err != nil {
		v.bad("kubernetes.address_pools", "", "%v", err)
		return
	}
	inPool := func(a netip.Addr) string {
		for _, p := range pools {
			for _, r := range p.Ranges {
				if r.Contains(a) {
					return p.Name
				}
			}
		}
		return ""
	}
	// A pool address is the Services' alone: a VIP or listener of the file
	// on it would be taken twice.
	for i, vip := range c.VIPs {
		if a, err := netip.ParseAddr(vip.Address); err == nil {
			if p := inPool(a); p != "" {
				v.bad(fmt.Sprintf("vips[%d].address", i), vip.Address, "is in kubernetes address pool %q, whose addresses go to Services", p)
			}
		}
	}
	for i, fe := range c.Frontends {
		if host, _, err := net.SplitHostPort(fe.Listen); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				if p := inPool(a); p != "" {
					v.bad(fmt.Sprintf("frontends[%d].listen", i), fe.Listen, "is in kubernetes address pool %q, whose addresses go to Services", p)
				}
			}
		}
	}
}

// addressPools parses the pools' addresses, reporting each bad one.
func (v *validator) addressPools(in []AddressPool) ([]addrpool.Pool, bool) {
	ok := true
	out := make([]addrpool.Pool, 0, len(in))
	for i, p := range in {
		path := fmt.Sprintf("kubernetes.address_pools[%d]", i)
		if p.Name == "" {
			v.bad(path+".name", "", "required")
			ok = false
		}
		if len(p.Addresses) == 0 {
			v.bad(path+".addresses", "", "at least one CIDR or range is required")
			ok = false
		}
		pool := addrpool.Pool{Name: p.Name, Namespaces: p.Namespaces}
		for j, a := range p.Addresses {
			r, err := addrpool.ParseRange(a)
			if err != nil {
				v.bad(fmt.Sprintf("%s.addresses[%d]", path, j), a, "%v", err)
				ok = false
				continue
			}
			pool.Ranges = append(pool.Ranges, r)
		}
		for j, ns := range p.Namespaces {
			if ns == "" {
				v.bad(fmt.Sprintf("%s.namespaces[%d]", path, j), "", "empty namespace name")
				ok = false
			}
		}
		out = append(out, pool)
	}
	return out, ok
}

// Pools returns the section's address pools for the allocator. A loaded
// config was validated, so every address parses.
func (k Kubernetes) Pools() []addrpool.Pool {
	v := &validator{decoder: newDecoder()}
	pools, _ := v.addressPools(k.AddressPools)
	return pools
}

// Served is what a source other than the file adds to what a node serves:
// the Kubernetes mode's VIPs, frontends and pools.
type Served struct {
	VIPs      []VIP
	Frontends []Frontend
	Pools     []Pool
}

// WithServed returns a copy of c that serves s too, after the file's own
// entries, validated whole (names, addresses and listeners unique, each
// frontend's pool there). c is not changed.
func (c *Config) WithServed(s Served) (*Config, error) {
	out := *c
	out.VIPs = append(slices.Clip(slices.Clone(c.VIPs)), s.VIPs...)
	out.Frontends = append(slices.Clip(slices.Clone(c.Frontends)), s.Frontends...)
	out.Pools = append(slices.Clip(slices.Clone(c.Pools)), s.Pools...)
	v := &validator{decoder: newDecoder()}
	v.validateVIPs(out.VIPs)
	v.validateFrontends(out.Frontends, v.validatePools(out.Pools))
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return &out, nil
}

// ServedVIP is a spread VIP on iface with the defaults a file's VIP gets.
func ServedVIP(address, iface string) VIP {
	return VIP{Address: address, Interface: iface, Placement: PlacementSpread,
		Lifetime: DefaultVIPLifetime, Refresh: DefaultVIPRefresh,
		AnnounceCount: DefaultAnnounceCount, AnnounceInterval: DefaultAnnounceInterval}
}

// ServedFrontend is a frontend with the defaults a file's frontend gets.
func ServedFrontend(name, listen, pool string) Frontend {
	return Frontend{Name: name, Listen: listen, Pool: pool,
		MaxConnections: DefaultMaxConnections, IdleTimeout: DefaultIdleTimeout}
}

// ServedPool is a round-robin pool of backends (weight 1) under the tcp
// check a file's pool gets by default, marked Served. Its backends start
// healthy: Kubernetes lists only endpoints its own probes call ready, and
// a VIP whose new frontend waited for rise checks on every node would
// have no fit holder meanwhile. The checks (and the proxy's failed
// connects) still take a dead one out after fall.
func ServedPool(name string, backends []string) Pool {
	p := Pool{Name: name, Served: true, Algorithm: AlgorithmRoundRobin, ConnectTimeout: DefaultConnectTimeout, ProxyProtocol: "none",
		Health: Health{Type: CheckTCP, Interval: DefaultCheckInterval, FastInterval: DefaultCheckInterval / 2,
			Timeout: DefaultCheckTimeout, Rise: DefaultRise, Fall: DefaultFall, Initial: InitialHealthy}}
	for _, b := range backends {
		p.Backends = append(p.Backends, Backend{Address: b, Weight: 1})
	}
	return p
}
