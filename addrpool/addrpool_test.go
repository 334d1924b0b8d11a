package addrpool

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func mustRanges(t *testing.T, specs ...string) []Range {
	t.Helper()
	var out []Range
	for _, s := range specs {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func mustNew(t *testing.T, pools ...Pool) *Allocator {
	t.Helper()
	a, err := New(pools)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tcp(ports ...uint16) []Port {
	var out []Port
	for _, p := range ports {
		out = append(out, Port{Protocol: "TCP", Port: p})
	}
	return out
}

func allocate(t *testing.T, a *Allocator, s Service) netip.Addr {
	t.Helper()
	addr, err := a.Allocate(s)
	if err != nil {
		t.Fatalf("allocate %s: %v", s.Key, err)
	}
	return addr
}

func TestParseRange(t *testing.T) {
	for _, c := range []struct{ in, first, last string }{
		{"198.18.0.200/29", "198.18.0.200", "198.18.0.207"},
		{"198.18.0.210-198.18.0.219", "198.18.0.210", "198.18.0.219"},
		{" 198.18.0.5 - 198.18.0.5 ", "198.18.0.5", "198.18.0.5"},
		{"198.18.1.0/32", "198.18.1.0", "198.18.1.0"},
		{"2001:db8::/126", "2001:db8::", "2001:db8::3"},
		{"2001:db8:0:1::/64", "2001:db8:0:1::", "2001:db8:0:1:ffff:ffff:ffff:ffff"},
		{"2001:db8::10-2001:db8::1f", "2001:db8::10", "2001:db8::1f"},
	} {
		r, err := ParseRange(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if r.First.String() != c.first || r.Last.String() != c.last {
			t.Errorf("%q = %s, want %s-%s", c.in, r, c.first, c.last)
		}
	}
}

func TestParseRangeRefusesWhatIsNoPool(t *testing.T) {
	for in, want := range map[string]string{
		"198.18.0.201/29":           "host bits set; did you mean 198.18.0.200/29",
		"198.18.0.219-198.18.0.210": "last address comes before its first",
		"198.18.0.1-2001:db8::1":    "different families",
		"198.18.0.1-":               "address range",
		"eth0":                      "want a CIDR",
		"198.18.0.0/33":             "want a CIDR",
		"fe80::1%eth0-fe80::2%eth0": "zone",
		"::ffff:198.18.0.1/128":     "IPv4-mapped",
	} {
		_, err := ParseRange(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), strings.TrimSpace(in)) {
			t.Errorf("%q: error %v, want one naming it and saying %q", in, err, want)
		}
	}
}

func TestNewRefusesBadPools(t *testing.T) {
	a := mustRanges(t, "198.18.0.200/29")
	b := mustRanges(t, "198.18.0.204-198.18.0.210")
	for want, pools := range map[string][]Pool{
		"pool 2: no name":                       {{Name: "a", Ranges: a}, {Ranges: b}},
		`"a": named twice`:                      {{Name: "a", Ranges: a}, {Name: "a", Ranges: mustRanges(t, "198.18.1.0/30")}},
		`"b": no addresses`:                     {{Name: "a", Ranges: a}, {Name: "b"}},
		`198.18.0.204-198.18.0.210 overlaps`:    {{Name: "a", Ranges: a}, {Name: "b", Ranges: b}},
		`198.18.0.200-198.18.0.207 of pool "a"`: {{Name: "a", Ranges: a}, {Name: "b", Ranges: mustRanges(t, "198.18.0.0/24")}},
		`"a": 198.18.0.204-198.18.0.210`:        {{Name: "a", Ranges: append(mustRanges(t, "198.18.0.200/29"), b...)}},
	} {
		if _, err := New(pools); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}

func TestAllocateTakesRangesInOrderAndReleases(t *testing.T) {
	a := mustNew(t, Pool{Name: "default", Ranges: mustRanges(t, "198.18.0.200/31", "198.18.0.210-198.18.0.210")})
	var got []string
	for i := range 3 {
		got = append(got, allocate(t, a, Service{Key: fmt.Sprintf("ns/s%d", i), Namespace: "ns", Ports: tcp(80)}).String())
	}
	if want := "198.18.0.200 198.18.0.201 198.18.0.210"; strings.Join(got, " ") != want {
		t.Fatalf("allocated %v, want %s", got, want)
	}
	// Allocating again keeps what a Service holds, even with a lower
	// address free: a Service's address never moves by itself.
	a.Release("ns/s0")
	if addr := allocate(t, a, Service{Key: "ns/s1", Namespace: "ns", Ports: tcp(80, 443)}); addr.String() != "198.18.0.201" {
		t.Errorf("s1 again got %s, want to keep 198.18.0.201", addr)
	}
	allocate(t, a, Service{Key: "ns/s0", Namespace: "ns", Ports: tcp(80)})
	_, err := a.Allocate(Service{Key: "ns/s3", Namespace: "ns", Ports: tcp(80)})
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "ns/s3") || !strings.Contains(err.Error(), "default") {
		t.Fatalf("a fourth service: %v, want ErrExhausted naming the service and the pool", err)
	}
	if _, held := a.Address("ns/s3"); held {
		t.Error("a failed allocation left an address behind")
	}
	a.Release("ns/s1")
	a.Release("ns/s1") // twice: nothing more happens
	if addr := allocate(t, a, Service{Key: "ns/s3", Namespace: "ns", Ports: tcp(80)}); addr.String() != "198.18.0.201" {
		t.Errorf("after the release s3 got %s, want the freed 198.18.0.201", addr)
	}
	if u := a.Usage(); len(u) != 1 || u[0].Used != 3 || u[0].Free != 0 {
		t.Errorf("usage %+v, want 3 used and none free", u)
	}
}

func TestRequestedAddress(t *testing.T) {
	a := mustNew(t,
		Pool{Name: "public", Ranges: mustRanges(t, "198.18.0.200/29")},
		Pool{Name: "team", Ranges: mustRanges(t, "198.18.1.0/30"), Namespaces: []string{"team"}})
	want := netip.MustParseAddr("198.18.0.205")
	if got := allocate(t, a, Service{Key: "ns/a", Namespace: "ns", Address: want}); got != want {
		t.Fatalf("asked for %s, got %s", want, got)
	}
	_, err := a.Allocate(Service{Key: "ns/b", Namespace: "ns", Address: want})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "held by ns/a") {
		t.Errorf("a second service asking for it: %v, want ErrConflict naming ns/a", err)
	}
	_, err = a.Allocate(Service{Key: "ns/b", Namespace: "ns", Address: netip.MustParseAddr("198.18.1.1")})
	if !errors.Is(err, ErrNotInPool) {
		t.Errorf("an address of another namespace's pool: %v, want ErrNotInPool", err)
	}
	_, err = a.Allocate(Service{Key: "ns/b", Namespace: "ns", Address: netip.MustParseAddr("198.18.9.9")})
	if !errors.Is(err, ErrNotInPool) {
		t.Errorf("an address in no pool: %v, want ErrNotInPool", err)
	}
	if got := allocate(t, a, Service{Key: "team/c", Namespace: "team", Address: netip.MustParseAddr("198.18.1.1")}); got.String() != "198.18.1.1" {
		t.Errorf("the team's own pool: got %s", got)
	}
	// A request that fails leaves what the Service holds.
	if _, err := a.Allocate(Service{Key: "ns/a", Namespace: "ns", Address: netip.MustParseAddr("198.18.1.1")}); !errors.Is(err, ErrNotInPool) {
		t.Errorf("ns/a asking for the team's address: %v, want ErrNotInPool", err)
	}
	if got, held := a.Address("ns/a"); !held || got != want {
		t.Errorf("after a failed request ns/a holds %s (%v), want still %s", got, held, want)
	}
	// A Service that changes what it asks for moves, and frees the old one.
	moved := netip.MustParseAddr("198.18.0.206")
	if got := allocate(t, a, Service{Key: "ns/a", Namespace: "ns", Address: moved}); got != moved {
		t.Fatalf("ns/a asking for %s got %s", moved, got)
	}
	if got := allocate(t, a, Service{Key: "ns/b", Namespace: "ns", Address: want}); got != want {
		t.Errorf("the address ns/a left: got %s", got)
	}
}

// Restoring after a restart: the addresses the Services' status carries
// are fed in as requests first, and new Services get what is left.
func TestRestoreKeepsStatusAddresses(t *testing.T) {
	pool := Pool{Name: "default", Ranges: mustRanges(t, "198.18.0.200/30")}
	before := mustNew(t, pool)
	old := map[string]netip.Addr{}
	for _, k := range []string{"ns/a", "ns/b", "ns/c"} {
		old[k] = allocate(t, before, Service{Key: k, Namespace: "ns"})
	}
	before.Release("ns/a")
	after := mustNew(t, pool)
	for _, k := range []string{"ns/c", "ns/b"} { // any order
		if got := allocate(t, after, Service{Key: k, Namespace: "ns", Address: old[k]}); got != old[k] {
			t.Errorf("%s restored to %s, want %s", k, got, old[k])
		}
	}
	if got := allocate(t, after, Service{Key: "ns/d", Namespace: "ns"}); got != old["ns/a"] {
		t.Errorf("a new service got %s, want the free %s", got, old["ns/a"])
	}
}

func TestSharing(t *testing.T) {
	a := mustNew(t, Pool{Name: "default", Ranges: mustRanges(t, "198.18.0.200/30")})
	web := allocate(t, a, Service{Key: "ns/web", Namespace: "ns", SharingKey: "front", Ports: tcp(80, 443)})
	// Same key, other ports: the same address, without asking for it.
	if got := allocate(t, a, Service{Key: "ns/dns", Namespace: "ns", SharingKey: "front", Ports: []Port{{"UDP", 53}, {"TCP", 53}}}); got != web {
		t.Errorf("a service with the same sharing key got %s, want %s shared", got, web)
	}
	// Same key, a port that overlaps: not that address.
	if got := allocate(t, a, Service{Key: "ns/web2", Namespace: "ns", SharingKey: "front", Ports: tcp(443)}); got == web {
		t.Errorf("an overlapping port got the shared address %s", got)
	}
	_, err := a.Allocate(Service{Key: "ns/web3", Namespace: "ns", SharingKey: "front", Ports: tcp(80), Address: web})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "80/TCP is ns/web's") {
		t.Errorf("asking for it with an overlapping port: %v, want ErrConflict naming the port and its holder", err)
	}
	// UDP 443 does not overlap TCP 443.
	if got := allocate(t, a, Service{Key: "ns/quic", Namespace: "ns", SharingKey: "front", Ports: []Port{{"UDP", 443}}}); got != web {
		t.Errorf("UDP 443 beside TCP 443 got %s, want %s", got, web)
	}
	// Another key, or none, asking for it: refused.
	for _, key := range []string{"back", ""} {
		_, err := a.Allocate(Service{Key: "ns/other", Namespace: "ns", SharingKey: key, Ports: tcp(8080), Address: web})
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "same sharing key") {
			t.Errorf("sharing key %q asking for the shared address: %v, want ErrConflict", key, err)
		}
	}
	// A release leaves the address to the others, until the last goes.
	a.Release("ns/web")
	a.Release("ns/dns")
	if _, err := a.Allocate(Service{Key: "ns/solo", Namespace: "ns", Address: web}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "ns/quic") {
		t.Errorf("with ns/quic still on it: %v, want ErrConflict naming ns/quic", err)
	}
	a.Release("ns/quic")
	if got := allocate(t, a, Service{Key: "ns/solo", Namespace: "ns", Address: web}); got != web {
		t.Errorf("once the last sharer left: got %s, want %s", got, web)
	}
}

func TestFamilies(t *testing.T) {
	a := mustNew(t,
		Pool{Name: "v6", Ranges: mustRanges(t, "2001:db8::/127")},
		Pool{Name: "v4", Ranges: mustRanges(t, "198.18.0.200/32")})
	if got := allocate(t, a, Service{Key: "ns/any", Namespace: "ns"}); !got.Is4() {
		t.Errorf("a service of either family got %s, want IPv4 first", got)
	}
	if got := allocate(t, a, Service{Key: "ns/any2", Namespace: "ns"}); got.String() != "2001:db8::" {
		t.Errorf("with IPv4 used up: got %s, want 2001:db8::", got)
	}
	if got := allocate(t, a, Service{Key: "ns/six", Namespace: "ns", Family: 6}); got.String() != "2001:db8::1" {
		t.Errorf("an IPv6 service got %s", got)
	}
	_, err := a.Allocate(Service{Key: "ns/four", Namespace: "ns", Family: 4})
	if !errors.Is(err, ErrExhausted) {
		t.Errorf("an IPv4 service with IPv4 used up: %v, want ErrExhausted", err)
	}
	_, err = a.Allocate(Service{Key: "ns/four", Namespace: "ns", Family: 4, Address: netip.MustParseAddr("2001:db8::1")})
	if !errors.Is(err, ErrNotInPool) {
		t.Errorf("an IPv4 service asking for an IPv6 address: %v, want ErrNotInPool", err)
	}
}

// A /64 is 2^64 addresses: the walk to a free one must not count them.
func TestLargeIPv6Pool(t *testing.T) {
	a := mustNew(t, Pool{Name: "v6", Ranges: mustRanges(t, "2001:db8:0:1::/64")})
	for i := range 100 {
		allocate(t, a, Service{Key: fmt.Sprintf("ns/s%d", i), Namespace: "ns"})
	}
	u := a.Usage()
	if u[0].Used != 100 || u[0].Free != 1<<64-100 {
		t.Errorf("usage %+v, want 100 used and 2^64-100 free", u[0])
	}
}

func TestPoolChoice(t *testing.T) {
	a := mustNew(t,
		Pool{Name: "team", Ranges: mustRanges(t, "198.18.1.0/32"), Namespaces: []string{"team"}},
		Pool{Name: "public", Ranges: mustRanges(t, "198.18.0.200/30")})
	if got := allocate(t, a, Service{Key: "team/a", Namespace: "team"}); got.String() != "198.18.1.0" {
		t.Errorf("team/a got %s, want its namespace's pool first", got)
	}
	if got := allocate(t, a, Service{Key: "team/b", Namespace: "team"}); got.String() != "198.18.0.200" {
		t.Errorf("team/b got %s, want the public pool once the team's is used up", got)
	}
	if got := allocate(t, a, Service{Key: "ns/c", Namespace: "ns"}); got.String() != "198.18.0.201" {
		t.Errorf("ns/c got %s, want the public pool", got)
	}
	for pool, want := range map[string]string{
		"team":    `address pool "team" does not serve namespace "ns"`,
		"missing": `no address pool named "missing"`,
	} {
		if _, err := a.Allocate(Service{Key: "ns/d", Namespace: "ns", Pool: pool}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("pool %q: %v, want %q", pool, err, want)
		}
	}
	only := mustNew(t, Pool{Name: "team", Ranges: mustRanges(t, "198.18.1.0/32"), Namespaces: []string{"team"}})
	if _, err := only.Allocate(Service{Key: "ns/e", Namespace: "ns"}); err == nil || !strings.Contains(err.Error(), `no address pool serves namespace "ns"`) {
		t.Errorf("a namespace no pool serves: %v", err)
	}
}
