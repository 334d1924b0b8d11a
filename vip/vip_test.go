package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The timings of every test VIP: config's defaults, spelled out, since vip
// has none of its own.
const (
	testLifetime         = 3 * time.Second
	testRefresh          = time.Second
	testAnnounceCount    = 4
	testAnnounceInterval = 400 * time.Millisecond
)

// testVIP is a VIP with the test timings.
func testVIP(addr netip.Addr, ifname string) Config {
	return Config{
		Address: addr, Interface: ifname,
		Lifetime: testLifetime, Refresh: testRefresh,
		AnnounceCount: testAnnounceCount, AnnounceInterval: testAnnounceInterval,
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newManager is New(opts) or fails the test.
func newManager(t *testing.T, opts Options) *Manager {
	t.Helper()
	m, err := New(opts)
	must(t, err)
	return m
}

// add adds c to m or fails the test.
func add(t *testing.T, m *Manager, c Config) *VIP {
	t.Helper()
	v, err := m.Add(c)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestAddLeavesTimingRulesToConfig(t *testing.T) {
	// config decides which timings are sensible; Add takes any that is set.
	c := Config{
		Address: netip.MustParseAddr("198.18.0.100"), Interface: "eth0",
		Lifetime: time.Second, Refresh: time.Second, AnnounceCount: 1, AnnounceInterval: time.Millisecond,
	}
	if got := add(t, newManager(t, Options{}), c).Config(); got != c {
		t.Fatalf("config = %+v, want it as given: %+v", got, c)
	}
}

func TestAddRejectsInvalidConfig(t *testing.T) {
	v4 := netip.MustParseAddr("198.18.0.100")
	with := func(change func(*Config)) []Config {
		c := testVIP(v4, "eth0")
		change(&c)
		return []Config{c}
	}
	cases := []struct {
		name string
		vips []Config
		want string
	}{
		{"missing address", with(func(c *Config) { c.Address = netip.Addr{} }), "address is missing"},
		{"missing interface", with(func(c *Config) { c.Interface = "" }), "interface is missing"},
		{"interface too long", with(func(c *Config) { c.Interface = "abcdefghijklmnop" }), "longer than 15"},
		{"multicast", with(func(c *Config) { c.Address = netip.MustParseAddr("224.0.0.1") }), "unicast"},
		{"link-local v6", with(func(c *Config) { c.Address = netip.MustParseAddr("fe80::1") }), "link-local"},
		{"zone", with(func(c *Config) { c.Address = netip.MustParseAddr("2001:2::1%eth0") }), "zone"},
		// Timings config did not fill in: the field is named.
		{"lifetime unset", with(func(c *Config) { c.Lifetime = 0 }), "Lifetime 0s must be positive"},
		{"refresh unset", with(func(c *Config) { c.Refresh = 0 }), "Refresh 0s must be positive"},
		{"count unset", with(func(c *Config) { c.AnnounceCount = 0 }), "AnnounceCount 0 must be positive"},
		{"interval negative", with(func(c *Config) { c.AnnounceInterval = -time.Second }), "AnnounceInterval -1s must be positive"},
		{"duplicate", []Config{testVIP(v4, "eth0"), testVIP(v4, "eth1")}, "configured twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newManager(t, Options{})
			var err error
			for _, v := range c.vips {
				if _, err = m.Add(v); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Add error = %v, want one containing %q", err, c.want)
			}
			if got := len(m.Status()); got != len(c.vips)-1 {
				t.Fatalf("%d VIPs in the set after the refused Add, want %d: a refused VIP changed the set", got, len(c.vips)-1)
			}
		})
	}
}

func TestLifetimeRoundsUpToSeconds(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int
	}{{3 * time.Second, 3}, {2500 * time.Millisecond, 3}, {2 * time.Second, 2}} {
		if got := (Config{Lifetime: c.d}).lifetimeSeconds(); got != c.want {
			t.Errorf("lifetime %s -> %d s, want %d", c.d, got, c.want)
		}
	}
}

func TestLabelOnlyForIPv4WhenItFits(t *testing.T) {
	v4, v6 := netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("2001:2::100")
	for _, c := range []struct {
		addr netip.Addr
		ifc  string
		want string
	}{
		{v4, "eth0", "eth0:vip"},
		{v4, "abcdefghijk", "abcdefghijk:vip"}, // 15 bytes exactly
		{v4, "abcdefghijkl", ""},               // 16 bytes: no label
		{v6, "eth0", ""},
	} {
		if got := (Config{Address: c.addr, Interface: c.ifc}).label(); got != c.want {
			t.Errorf("label(%s, %s) = %q, want %q", c.addr, c.ifc, got, c.want)
		}
	}
}

func TestNeedsCapNamesTheCapability(t *testing.T) {
	err := fmt.Errorf("add address 198.18.0.100/32 to eth0: %w", needsCap(syscall.EPERM, "CAP_NET_ADMIN"))
	if want := "add address 198.18.0.100/32 to eth0: operation not permitted (needs CAP_NET_ADMIN)"; err.Error() != want {
		t.Fatalf("error = %q, want %q", err, want)
	}
	if !errors.Is(err, syscall.EPERM) {
		t.Fatal("wrapped error no longer matches EPERM")
	}
	if other := needsCap(syscall.ENODEV, "CAP_NET_RAW"); other != syscall.ENODEV {
		t.Fatalf("non-permission error changed to %v", other)
	}
}

func TestStatusListsTheCurrentSetNotHeld(t *testing.T) {
	m := newManager(t, Options{})
	first := add(t, m, testVIP(netip.MustParseAddr("198.18.0.100"), "eth0"))
	add(t, m, testVIP(netip.MustParseAddr("2001:2::100"), "eth1"))
	want := []Status{{"198.18.0.100", "eth0", false}, {"2001:2::100", "eth1", false}}
	if got := m.Status(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Status = %v, want %v", got, want)
	}
	must(t, m.Remove(first))
	add(t, m, testVIP(netip.MustParseAddr("198.18.0.101"), "eth0"))
	want = []Status{{"2001:2::100", "eth1", false}, {"198.18.0.101", "eth0", false}}
	if got := m.Status(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after a remove and an add: Status = %v, want %v", got, want)
	}
}

func TestLinkChangeCallbackOnlyOnChange(t *testing.T) {
	var calls []bool
	m := newManager(t, Options{OnLinkChange: func(up bool) { calls = append(calls, up) }})
	add(t, m, testVIP(netip.MustParseAddr("198.18.0.100"), "eth0"))
	add(t, m, testVIP(netip.MustParseAddr("198.18.0.101"), "eth1"))
	if !m.LinkUp() {
		t.Fatal("LinkUp false before any interface was read")
	}
	m.setLinkState(map[string]bool{"eth0": true, "eth1": true})
	m.setLinkState(map[string]bool{"eth0": true, "eth1": false})
	m.setLinkState(map[string]bool{"eth0": false, "eth1": false})
	if m.LinkUp() {
		t.Fatal("LinkUp true with both interfaces down")
	}
	m.setLinkState(map[string]bool{"eth0": true, "eth1": true})
	// A watch that lost sight of the links knows none of them is up, until
	// it reads them again.
	m.setLinkLost()
	if m.LinkUp() {
		t.Fatal("LinkUp true while the link watch is down")
	}
	m.setLinkLost()
	m.setLinkState(map[string]bool{"eth0": true, "eth1": true})
	if fmt.Sprint(calls) != "[false true false true]" {
		t.Fatalf("OnLinkChange calls = %v, want [false true false true]", calls)
	}
}

// A VIP on an interface that is down makes LinkUp false as soon as it is
// added, and removing it makes LinkUp true again: each change reaches
// OnLinkChange once.
func TestAddAndRemoveReachOnLinkChange(t *testing.T) {
	var calls []bool
	m := newManager(t, Options{OnLinkChange: func(up bool) { calls = append(calls, up) }})
	add(t, m, testVIP(netip.MustParseAddr("198.18.0.100"), "eth0"))
	m.setLinkState(map[string]bool{"eth0": true, "eth1": false})
	down := add(t, m, testVIP(netip.MustParseAddr("198.18.0.101"), "eth1"))
	if m.LinkUp() {
		t.Fatal("LinkUp true with a VIP on a down interface")
	}
	must(t, m.Remove(down))
	if !m.LinkUp() {
		t.Fatal("LinkUp false after the VIP on the down interface was removed")
	}
	if fmt.Sprint(calls) != "[false true]" {
		t.Fatalf("OnLinkChange calls = %v, want [false true]", calls)
	}
}

// gather lists every series of reg as name{address,interface}=value.
func gather(t *testing.T, reg prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			value := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			got = append(got, fmt.Sprintf("%s{%s,%s}=%g", mf.GetName(), labels["address"], labels["interface"], value))
		}
	}
	return got
}

func TestEverySeriesIsExportedFromTheStart(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := newManager(t, Options{Registerer: reg})
	add(t, m, testVIP(netip.MustParseAddr("198.18.0.100"), "eth0"))
	// Read from the registry only: a series this test created itself
	// would prove nothing about Add.
	got := gather(t, reg)
	want := []string{
		"vipd_vip_announcements_total{198.18.0.100,eth0}=0",
		"vipd_vip_claim_to_announce_seconds{,}=0",
		"vipd_vip_claims_total{198.18.0.100,eth0}=0",
		"vipd_vip_conflicts_total{198.18.0.100,eth0}=0",
		"vipd_vip_held{198.18.0.100,eth0}=0",
		"vipd_vip_releases_total{198.18.0.100,eth0}=0",
		"vipd_vip_renewal_failures_total{198.18.0.100,eth0}=0",
		"vipd_vip_restores_total{198.18.0.100,eth0}=0",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("series = %v\nwant %v", got, want)
	}
	if _, err := New(Options{Registerer: reg}); err == nil {
		t.Fatal("registering the metrics twice did not fail")
	}
}

// A removed VIP's series leave the metrics; the other VIP's stay.
func TestRemovedVIPLeavesTheMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := newManager(t, Options{Registerer: reg})
	add(t, m, testVIP(netip.MustParseAddr("198.18.0.100"), "eth0"))
	gone := add(t, m, testVIP(netip.MustParseAddr("198.18.0.101"), "eth1"))
	must(t, m.Remove(gone))
	for _, s := range gather(t, reg) {
		if strings.Contains(s, "198.18.0.101") {
			t.Errorf("series %s of the removed VIP is still exported", s)
		}
	}
	if got := gather(t, reg); len(got) != 8 {
		t.Errorf("series after the remove = %v, want the other VIP's seven and the histogram", got)
	}
}
