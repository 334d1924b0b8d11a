// Package addrpool hands out addresses from configured pools to the
// Services that ask for one: the allocator of vipd's Kubernetes mode
// (kubernetes.address_pools in the config). It knows nothing of
// Kubernetes: a Service here is a key, a namespace, what it asks for and
// its ports, so every rule is tested without a cluster.
//
// The rules are MetalLB's, which users of bare-metal load balancers know:
// an address goes to one Service, or to several that carry the same
// sharing key and whose ports do not overlap; a Service may ask for a given
// address, which must lie in a pool that serves its namespace; pools may
// be limited to namespaces. The allocator holds no state beyond what it is
// told: after a restart or a failover the controller feeds it the
// addresses the Services' status already carries, as requests, before it
// allocates anything new.
package addrpool

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
)

// Errors an allocation wraps, for the controller's Events and metrics.
var (
	// ErrExhausted: no pool that may serve the Service has an address left.
	ErrExhausted = errors.New("no address left")
	// ErrConflict: the address asked for is taken by a Service it may not
	// share with.
	ErrConflict = errors.New("address in use")
	// ErrNotInPool: the address asked for lies in no pool the Service may
	// use.
	ErrNotInPool = errors.New("address not in a pool the service may use")
)

// Range is the addresses First to Last, both included, of one family.
type Range struct {
	First, Last netip.Addr
}

// ParseRange reads a CIDR ("198.18.0.200/29": every address in it) or a
// range ("198.18.0.210-198.18.0.219").
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err := parseAddr(first)
		if err != nil {
			return Range{}, fmt.Errorf("address range %q: %w", s, err)
		}
		b, err := parseAddr(last)
		if err != nil {
			return Range{}, fmt.Errorf("address range %q: %w", s, err)
		}
		if a.Is4() != b.Is4() {
			return Range{}, fmt.Errorf("address range %q: its ends are of different families", s)
		}
		if b.Less(a) {
			return Range{}, fmt.Errorf("address range %q: its last address comes before its first", s)
		}
		return Range{First: a, Last: b}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, fmt.Errorf("address pool entry %q: want a CIDR (198.18.0.200/29) or a range (198.18.0.210-198.18.0.219)", s)
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return Range{}, fmt.Errorf("address pool entry %q: a zone or an IPv4-mapped address is not a VIP", s)
	}
	if m := p.Masked(); m != p {
		return Range{}, fmt.Errorf("address pool entry %q: host bits set; did you mean %s?", s, m)
	}
	return Range{First: p.Addr(), Last: lastOf(p)}, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" || a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("%s: a zone or an IPv4-mapped address is not a VIP", a)
	}
	return a, nil
}

// lastOf is the highest address of p.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		keep := max(0, min(8, p.Bits()-8*i)) // network bits in this byte
		b[i] |= byte(0xff >> keep)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether a lies in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() == r.First.Is4() && !a.Less(r.First) && !r.Last.Less(a)
}

// size is how many addresses r holds (up to 2^128).
func (r Range) size() *big.Int {
	n := new(big.Int).Sub(new(big.Int).SetBytes(r.Last.AsSlice()), new(big.Int).SetBytes(r.First.AsSlice()))
	return n.Add(n, big.NewInt(1))
}

func (r Range) String() string {
	return r.First.String() + "-" + r.Last.String()
}

// Pool is one configured address pool (kubernetes.address_pools).
type Pool struct {
	Name   string
	Ranges []Range
	// Namespaces limits the pool to Services of these namespaces; empty:
	// every namespace.
	Namespaces []string
}

func (p Pool) serves(namespace string) bool {
	return len(p.Namespaces) == 0 || slices.Contains(p.Namespaces, namespace)
}

// Port is one port of a Service, as the sharing rule compares them.
type Port struct {
	Protocol string // TCP, UDP or SCTP
	Port     uint16
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// Service is what the allocator needs of a Service.
type Service struct {
	Key       string // namespace/name: one allocation per key
	Namespace string
	// Pool names the pool to take from; empty: any pool that serves
	// Namespace, in the order configured.
	Pool string
	// Address is the address asked for (spec.loadBalancerIP, an
	// annotation, or after a restart the one its status carries); the
	// zero Addr: any.
	Address netip.Addr
	// Family is 4 or 6 for a Service of one IP family, 0 for either
	// (IPv4 first).
	Family int
	// SharingKey lets Services with the same key share an address when
	// their ports do not overlap; empty: never shared.
	SharingKey string
	Ports      []Port
}

// user is one Service holding an address.
type user struct {
	key, sharing string
	ports        []Port
}

// Allocator keeps which Service holds which address. It is not safe for
// concurrent use: the controller's one loop owns it.
type Allocator struct {
	pools   []Pool
	users   map[netip.Addr][]user
	address map[string]netip.Addr // service key -> its address
}

// New checks the pools (named, unique names, no range empty or
// overlapping another) and returns an Allocator with nothing allocated.
func New(pools []Pool) (*Allocator, error) {
	names := map[string]bool{}
	type owned struct {
		r    Range
		pool string
	}
	var all []owned
	for i, p := range pools {
		if p.Name == "" {
			return nil, fmt.Errorf("address pool %d: no name", i+1)
		}
		if names[p.Name] {
			return nil, fmt.Errorf("address pool %q: named twice", p.Name)
		}
		names[p.Name] = true
		if len(p.Ranges) == 0 {
			return nil, fmt.Errorf("address pool %q: no addresses", p.Name)
		}
		for _, r := range p.Ranges {
			for _, o := range all {
				if r.Contains(o.r.First) || r.Contains(o.r.Last) || o.r.Contains(r.First) {
					return nil, fmt.Errorf("address pool %q: %s overlaps %s of pool %q", p.Name, r, o.r, o.pool)
				}
			}
			all = append(all, owned{r, p.Name})
		}
	}
	return &Allocator{pools: slices.Clone(pools), users: map[netip.Addr][]user{}, address: map[string]netip.Addr{}}, nil
}

// Allocate gives s an address and returns it. A Service that already
// holds one keeps it while it still fits what it asks; otherwise the
// address asked for, or else one it may share (same sharing key, ports
// apart), or else the first free address of the first pool that serves it.
// On an error s holds what it held before, and nothing else changes.
func (a *Allocator) Allocate(s Service) (netip.Addr, error) {
	pools, err := a.poolsFor(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if cur, ok := a.address[s.Key]; ok && a.fits(s, pools, cur) {
		a.take(s, cur) // its ports or sharing key may have changed
		return cur, nil
	}
	if s.Address.IsValid() {
		if !inAny(pools, s.Address) || !familyOK(s.Family, s.Address) {
			return netip.Addr{}, fmt.Errorf("service %s asks for %s: %w (%s)", s.Key, s.Address, ErrNotInPool, poolNames(pools))
		}
		if why := a.clash(s, s.Address); why != "" {
			return netip.Addr{}, fmt.Errorf("service %s asks for %s: %w: %s", s.Key, s.Address, ErrConflict, why)
		}
		a.take(s, s.Address)
		return s.Address, nil
	}
	if s.SharingKey != "" {
		for _, addr := range a.sharedAddresses() {
			if inAny(pools, addr) && familyOK(s.Family, addr) && a.clash(s, addr) == "" {
				a.take(s, addr)
				return addr, nil
			}
		}
	}
	for _, fam := range families(s.Family) {
		for _, p := range pools {
			for _, r := range p.Ranges {
				if r.First.Is4() != (fam == 4) {
					continue
				}
				if addr, ok := a.firstFree(r); ok {
					a.take(s, addr)
					return addr, nil
				}
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("service %s: %w in %s", s.Key, ErrExhausted, poolNames(pools))
}

// Release frees what the Service of key holds (deleted, or no longer a
// LoadBalancer). An address others share stays theirs.
func (a *Allocator) Release(key string) {
	addr, ok := a.address[key]
	if !ok {
		return
	}
	delete(a.address, key)
	a.users[addr] = slices.DeleteFunc(a.users[addr], func(u user) bool { return u.key == key })
	if len(a.users[addr]) == 0 {
		delete(a.users, addr)
	}
}

// Address returns what the Service of key holds.
func (a *Allocator) Address(key string) (netip.Addr, bool) {
	addr, ok := a.address[key]
	return addr, ok
}

// Usage is one pool's occupancy (vipd_kubernetes_pool_addresses).
type Usage struct {
	Pool string
	Used int     // addresses held by at least one Service
	Free float64 // addresses left: a float, as an IPv6 pool may hold 2^64 or more
}

// Usage returns each pool's occupancy, in the order configured.
func (a *Allocator) Usage() []Usage {
	out := make([]Usage, 0, len(a.pools))
	for _, p := range a.pools {
		total := new(big.Int)
		for _, r := range p.Ranges {
			total.Add(total, r.size())
		}
		used := 0
		for addr := range a.users {
			if inAny([]Pool{p}, addr) {
				used++
			}
		}
		free, _ := new(big.Float).SetInt(total.Sub(total, big.NewInt(int64(used)))).Float64()
		out = append(out, Usage{Pool: p.Name, Used: used, Free: free})
	}
	return out
}

// poolsFor is the pools s may take from.
func (a *Allocator) poolsFor(s Service) ([]Pool, error) {
	var out []Pool
	for _, p := range a.pools {
		if (s.Pool == "" || s.Pool == p.Name) && p.serves(s.Namespace) {
			out = append(out, p)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if s.Pool != "" {
		if !slices.ContainsFunc(a.pools, func(p Pool) bool { return p.Name == s.Pool }) {
			return nil, fmt.Errorf("service %s: no address pool named %q", s.Key, s.Pool)
		}
		return nil, fmt.Errorf("service %s: address pool %q does not serve namespace %q", s.Key, s.Pool, s.Namespace)
	}
	return nil, fmt.Errorf("service %s: no address pool serves namespace %q", s.Key, s.Namespace)
}

// fits reports whether s may keep addr.
func (a *Allocator) fits(s Service, pools []Pool, addr netip.Addr) bool {
	return (!s.Address.IsValid() || s.Address == addr) && inAny(pools, addr) && familyOK(s.Family, addr) && a.clash(s, addr) == ""
}

// clash says why s may not hold addr beside its other users ("" if it may).
func (a *Allocator) clash(s Service, addr netip.Addr) string {
	for _, u := range a.users[addr] {
		if u.key == s.Key {
			continue
		}
		if s.SharingKey == "" || u.sharing != s.SharingKey {
			return fmt.Sprintf("held by %s, and only services with the same sharing key may share an address", u.key)
		}
		for _, p := range s.Ports {
			if slices.Contains(u.ports, p) {
				return fmt.Sprintf("port %s is %s's on it", p, u.key)
			}
		}
	}
	return ""
}

// take records s as a user of addr, and of nothing else.
func (a *Allocator) take(s Service, addr netip.Addr) {
	a.Release(s.Key)
	a.address[s.Key] = addr
	a.users[addr] = append(a.users[addr], user{key: s.Key, sharing: s.SharingKey, ports: slices.Clone(s.Ports)})
}

// sharedAddresses is every address in use whose users all carry a sharing
// key, lowest first, so that the choice does not depend on map order.
func (a *Allocator) sharedAddresses() []netip.Addr {
	var out []netip.Addr
	for addr, us := range a.users {
		if !slices.ContainsFunc(us, func(u user) bool { return u.sharing == "" }) {
			out = append(out, addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// firstFree is r's lowest address nobody holds. The walk stops at the
// first gap, so it takes at most one step per address in use, however
// large r is.
func (a *Allocator) firstFree(r Range) (netip.Addr, bool) {
	for addr := r.First; addr.IsValid() && !r.Last.Less(addr); addr = addr.Next() {
		if len(a.users[addr]) == 0 {
			return addr, true
		}
	}
	return netip.Addr{}, false
}

func inAny(pools []Pool, addr netip.Addr) bool {
	for _, p := range pools {
		for _, r := range p.Ranges {
			if r.Contains(addr) {
				return true
			}
		}
	}
	return false
}

func familyOK(family int, addr netip.Addr) bool {
	return family == 0 || (family == 4) == addr.Is4()
}

func families(family int) []int {
	if family == 0 {
		return []int{4, 6}
	}
	return []int{family}
}

func poolNames(pools []Pool) string {
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = p.Name
	}
	return "pool " + strings.Join(names, ", ")
}
