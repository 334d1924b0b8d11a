package kube

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/vipd/vipd/addrpool"
	"github.com/vipd/vipd/config"
)

// Annotations a Service may carry.
const (
	// AnnotationAddress asks for an address (as the deprecated
	// spec.loadBalancerIP does, which is read too).
	AnnotationAddress = "vipd.io/address"
	// AnnotationPool names the address pool to take from.
	AnnotationPool = "vipd.io/address-pool"
	// AnnotationSharingKey lets Services with the same key share an
	// address when their ports do not overlap.
	AnnotationSharingKey = "vipd.io/sharing-key"
)

// setup is what a plan needs of the config and the node.
type setup struct {
	pools     []addrpool.Pool
	class     string // spec.loadBalancerClass served; "": none set
	iface     string // carries the VIPs
	node      string // this node's name, as endpoints' nodeName gives it
	allocates bool   // this node leads: it allocates and writes status
}

// statusWrite is a status the leader sets: the Service's ingress becomes
// addr, or is cleared when addr is the zero Addr.
type statusWrite struct {
	svc  *corev1.Service
	addr netip.Addr
	pool string // the pool addr came from
}

// plan is what one pass over the informers' view works out.
type plan struct {
	// held maps each Service of ours with an address in its status to it.
	held map[string]netip.Addr
	// served is what the Services with an address in their status add to
	// the node: the same on every node that sees the same objects.
	served config.Served
	// localOnly maps each frontend of a Service with
	// externalTrafficPolicy Local to whether this node has a ready
	// endpoint of it.
	localOnly map[string]bool
	writes    []statusWrite
	// pending is why each Service of ours without an address has none
	// (on the leader: why it could not get one).
	pending map[string]error
	// failed is why the leader could not give a Service the address it
	// asks for: pending ones, and those that keep the one they hold.
	failed map[string]error
	// allocated counts the Services of ours with an address, held or
	// being written.
	allocated int
	usage     []addrpool.Usage
}

// serviceKey is a Service's name in the allocator, the Events and the logs.
func serviceKey(s *corev1.Service) string { return s.Namespace + "/" + s.Name }

// ours says whether s is a LoadBalancer of the class vipd serves.
func (c setup) ours(s *corev1.Service) bool {
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	class := ""
	if s.Spec.LoadBalancerClass != nil {
		class = *s.Spec.LoadBalancerClass
	}
	return class == c.class
}

// statusAddr is the address s's status carries from vipd (ipMode Proxy),
// if any.
func statusAddr(s *corev1.Service) (netip.Addr, bool) {
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeProxy {
			continue
		}
		if a, err := netip.ParseAddr(in.IP); err == nil {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// request is what s asks of the allocator, with addr as the address asked
// for (the zero Addr: any).
func request(s *corev1.Service, addr netip.Addr) addrpool.Service {
	r := addrpool.Service{Key: serviceKey(s), Namespace: s.Namespace, Address: addr,
		Pool: s.Annotations[AnnotationPool], SharingKey: s.Annotations[AnnotationSharingKey]}
	if len(s.Spec.IPFamilies) == 1 {
		r.Family = 4
		if s.Spec.IPFamilies[0] == corev1.IPv6Protocol {
			r.Family = 6
		}
	}
	for _, p := range s.Spec.Ports {
		r.Ports = append(r.Ports, addrpool.Port{Protocol: string(cmp.Or(p.Protocol, corev1.ProtocolTCP)), Port: uint16(p.Port)})
	}
	return r
}

// asked is the address s asks for: its annotation, else
// spec.loadBalancerIP; the zero Addr when it asks for none.
func asked(s *corev1.Service) (netip.Addr, error) {
	text := cmp.Or(s.Annotations[AnnotationAddress], s.Spec.LoadBalancerIP)
	if text == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(text)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("service %s asks for %q: not an IP address", serviceKey(s), text)
	}
	return a, nil
}

// makePlan works out, from every Service and EndpointSlice, which Service
// has which address and what that serves on this node. The addresses come
// from the Services' status, which the leader writes: each Service that
// carries one keeps it while it still fits, in order of creation, so every
// node agrees. The leader then allocates for the Services left without.
func makePlan(c setup, services []*corev1.Service, endpoints []*discoveryv1.EndpointSlice) (plan, error) {
	alloc, err := addrpool.New(c.pools)
	if err != nil {
		return plan{}, err
	}
	var mine []*corev1.Service
	for _, s := range services {
		if c.ours(s) {
			mine = append(mine, s)
		}
	}
	slices.SortFunc(mine, func(a, b *corev1.Service) int {
		return cmp.Or(a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time), cmp.Compare(serviceKey(a), serviceKey(b)))
	})
	p := plan{localOnly: map[string]bool{}, pending: map[string]error{}, failed: map[string]error{}}
	held := map[string]netip.Addr{}
	for _, s := range mine {
		if addr, ok := statusAddr(s); ok {
			if _, err := alloc.Allocate(request(s, addr)); err == nil {
				held[serviceKey(s)] = addr
			}
		}
	}
	for _, s := range mine {
		key := serviceKey(s)
		cur, holds := held[key]
		want, err := asked(s)
		if holds && err == nil && (!want.IsValid() || want == cur) {
			continue
		}
		// No address, or one other than the address asked for: a Service
		// that holds one keeps it (and is served on it) until the leader
		// can give the one it asks for.
		if !c.allocates {
			if !holds {
				p.pending[key] = fmt.Errorf("service %s: waiting for the leader to write its address", key)
			}
			continue
		}
		if err == nil {
			var addr netip.Addr
			if addr, err = alloc.Allocate(request(s, want)); err == nil {
				p.writes = append(p.writes, statusWrite{svc: s, addr: addr, pool: poolOf(c.pools, addr)})
				continue
			}
		}
		p.failed[key] = err
		if !holds {
			p.pending[key] = err
		}
	}
	if c.allocates {
		p.writes = append(p.writes, c.stale(services)...)
	}
	p.allocated = len(mine) - len(p.pending)
	p.usage = alloc.Usage()
	p.held = held
	p.served, p.localOnly = c.serve(mine, held, endpoints)
	return p, nil
}

// stale are the clears of the status vipd wrote on Services it no longer
// serves (no longer a LoadBalancer, or of another class).
func (c setup) stale(services []*corev1.Service) []statusWrite {
	var out []statusWrite
	for _, s := range services {
		if addr, ok := statusAddr(s); ok && !c.ours(s) && poolOf(c.pools, addr) != "" {
			out = append(out, statusWrite{svc: s, pool: poolOf(c.pools, addr)})
		}
	}
	return out
}

// poolOf names the pool addr is in ("": none).
func poolOf(pools []addrpool.Pool, addr netip.Addr) string {
	for _, p := range pools {
		for _, r := range p.Ranges {
			if r.Contains(addr) {
				return p.Name
			}
		}
	}
	return ""
}

// frontendName names the frontend (and its pool) of a Service port.
func frontendName(s *corev1.Service, port int32) string {
	return "k8s:" + serviceKey(s) + ":" + strconv.Itoa(int(port))
}

// serve turns the Services that hold an address into VIPs, frontends and
// pools: a spread VIP per address, a frontend per TCP port on VIP:port
// whose pool is the port's ready endpoints. A port with no ready endpoint
// gets no frontend, so its connections are refused.
func (c setup) serve(mine []*corev1.Service, held map[string]netip.Addr, endpoints []*discoveryv1.EndpointSlice) (config.Served, map[string]bool) {
	bySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, e := range endpoints {
		if name := e.Labels[discoveryv1.LabelServiceName]; name != "" {
			bySvc[e.Namespace+"/"+name] = append(bySvc[e.Namespace+"/"+name], e)
		}
	}
	var out config.Served
	local := map[string]bool{}
	vips := map[netip.Addr]bool{}
	for _, s := range mine {
		addr, ok := held[serviceKey(s)]
		if !ok {
			continue
		}
		if !vips[addr] {
			vips[addr] = true
			out.VIPs = append(out.VIPs, config.ServedVIP(addr.String(), c.iface))
		}
		for _, port := range s.Spec.Ports {
			if cmp.Or(port.Protocol, corev1.ProtocolTCP) != corev1.ProtocolTCP {
				continue
			}
			backends, here := readyEndpoints(bySvc[serviceKey(s)], port.Name, c.node)
			if len(backends) == 0 {
				continue
			}
			name := frontendName(s, port.Port)
			out.Frontends = append(out.Frontends, config.ServedFrontend(name, netip.AddrPortFrom(addr, uint16(port.Port)).String(), name))
			out.Pools = append(out.Pools, config.ServedPool(name, backends))
			if s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
				local[name] = here
			}
		}
	}
	slices.SortFunc(out.VIPs, func(a, b config.VIP) int { return cmp.Compare(a.Address, b.Address) })
	return out, local
}

// readyEndpoints lists host:port of the ready endpoints of the slices'
// port named portName, sorted, and says whether one of them is on node.
func readyEndpoints(slicesOf []*discoveryv1.EndpointSlice, portName, node string) ([]string, bool) {
	seen := map[string]bool{}
	here := false
	for _, e := range slicesOf {
		if e.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var port int32
		for _, p := range e.Ports {
			if p.Port != nil && ptrOr(p.Name, "") == portName && ptrOr(p.Protocol, corev1.ProtocolTCP) == corev1.ProtocolTCP {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range e.Endpoints {
			if !ptrOr(ep.Conditions.Ready, true) {
				continue
			}
			for _, a := range ep.Addresses {
				if _, err := netip.ParseAddr(a); err != nil {
					continue
				}
				seen[net.JoinHostPort(a, strconv.Itoa(int(port)))] = true
				if ptrOr(ep.NodeName, "") == node {
					here = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	slices.Sort(out)
	return out, here
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
