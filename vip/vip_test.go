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

func TestNewAppliesDefaults(t *testing.T) {
	m, err := New(Options{VIPs: []Config{{Address: netip.MustParseAddr("198.18.0.100"), Interface: "eth0"}}})
	if err != nil {
		t.Fatal(err)
	}
	got := m.vips[0].cfg
	want := Config{
		Address: netip.MustParseAddr("198.18.0.100"), Interface: "eth0",
		Lifetime: DefaultLifetime, Refresh: DefaultRefresh,
		AnnounceCount: DefaultAnnounceCount, AnnounceInterval: DefaultAnnounceInterval,
	}
	if got != want {
		t.Fatalf("config = %+v, want %+v", got, want)
	}
}

func TestDefaultBurstOutlastsARPLocktime(t *testing.T) {
	// Linux ignores a second, different ARP answer for 1s (neigh locktime);
	// the burst must still have an announcement after that.
	if last := time.Duration(DefaultAnnounceCount-1) * DefaultAnnounceInterval; last <= time.Second {
		t.Fatalf("last announcement of the default burst at %s, not after the 1s locktime", last)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	v4 := netip.MustParseAddr("198.18.0.100")
	cases := []struct {
		name string
		vips []Config
		want string
	}{
		{"missing address", []Config{{Interface: "eth0"}}, "address is missing"},
		{"missing interface", []Config{{Address: v4}}, "interface is missing"},
		{"interface too long", []Config{{Address: v4, Interface: "abcdefghijklmnop"}}, "longer than 15"},
		{"multicast", []Config{{Address: netip.MustParseAddr("224.0.0.1"), Interface: "eth0"}}, "unicast"},
		{"link-local v6", []Config{{Address: netip.MustParseAddr("fe80::1"), Interface: "eth0"}}, "link-local"},
		{"zone", []Config{{Address: netip.MustParseAddr("2001:2::1%eth0"), Interface: "eth0"}}, "zone"},
		{"short lifetime", []Config{{Address: v4, Interface: "eth0", Lifetime: time.Second}}, "lifetime 1s"},
		{"refresh over half lifetime", []Config{{Address: v4, Interface: "eth0", Refresh: 2 * time.Second}}, "refresh 2s"},
		{"negative count", []Config{{Address: v4, Interface: "eth0", AnnounceCount: -1}}, "announce count"},
		{"negative interval", []Config{{Address: v4, Interface: "eth0", AnnounceInterval: -time.Second}}, "announce interval"},
		{"duplicate", []Config{{Address: v4, Interface: "eth0"}, {Address: v4, Interface: "eth1"}}, "configured twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(Options{VIPs: c.vips})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New error = %v, want one containing %q", err, c.want)
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

func TestStatusListsEveryVIPNotHeld(t *testing.T) {
	m, err := New(Options{VIPs: []Config{
		{Address: netip.MustParseAddr("198.18.0.100"), Interface: "eth0"},
		{Address: netip.MustParseAddr("2001:2::100"), Interface: "eth1"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{{"198.18.0.100", "eth0", false}, {"2001:2::100", "eth1", false}}
	got := m.Status()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Status = %v, want %v", got, want)
	}
}

func TestLinkChangeCallbackOnlyOnChange(t *testing.T) {
	var calls []bool
	m, err := New(Options{
		VIPs: []Config{
			{Address: netip.MustParseAddr("198.18.0.100"), Interface: "eth0"},
			{Address: netip.MustParseAddr("198.18.0.101"), Interface: "eth1"},
		},
		OnLinkChange: func(up bool) { calls = append(calls, up) },
	})
	if err != nil {
		t.Fatal(err)
	}
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
	if fmt.Sprint(calls) != "[false true]" {
		t.Fatalf("OnLinkChange calls = %v, want [false true]", calls)
	}
}

func TestMetricsAreRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := New(Options{VIPs: []Config{{Address: netip.MustParseAddr("198.18.0.100"), Interface: "eth0"}}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	m.metrics.held.WithLabelValues("198.18.0.100", "eth0").Set(1)
	for _, c := range []*prometheus.CounterVec{m.metrics.claims, m.metrics.releases, m.metrics.restores, m.metrics.announcements, m.metrics.conflicts} {
		c.WithLabelValues("198.18.0.100", "eth0")
	}
	m.metrics.claimToAnnounce.Observe(0.001)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	want := "[vipd_vip_announcements_total vipd_vip_claim_to_announce_seconds vipd_vip_claims_total vipd_vip_conflicts_total vipd_vip_held vipd_vip_releases_total vipd_vip_restores_total]"
	if fmt.Sprint(names) != want {
		t.Fatalf("metrics = %v, want %v", names, want)
	}
	if _, err := New(Options{Registerer: reg}); err == nil {
		t.Fatal("registering the metrics twice did not fail")
	}
}
