package main

import (
	"reflect"
	"testing"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/health"
	"github.com/vipd/vipd/placement"
)

// A spread VIP is named by its canonical address and carries the
// frontends listening on it; leader VIPs are not placement's.
func TestSpreadVIPsCarryTheirFrontends(t *testing.T) {
	cfg := &config.Config{
		VIPs: []config.VIP{
			{Address: "198.18.0.100", Placement: config.PlacementLeader},
			{Address: "2001:2:0::101", Placement: config.PlacementSpread, Prefer: []string{"lb-2"}},
		},
		Frontends: []config.Frontend{
			{Name: "web", Listen: "[2001:2:0::101]:80", Pool: "web"},
			{Name: "api", Listen: "198.18.0.100:443", Pool: "api"},
			{Name: "tls", Listen: "[2001:2::101]:443", Pool: "api"},
		},
	}
	want := []placement.VIP{{Address: "2001:2::101", Placement: placement.Spread, Prefer: []string{"lb-2"}, Frontends: []string{"web", "tls"}}}
	if got := spreadVIPs(cfg); !reflect.DeepEqual(got, want) {
		t.Errorf("spread VIPs %+v, want %+v", got, want)
	}
	pools := []health.PoolHealth{
		{Name: "web", Backends: []health.BackendHealth{{Healthy: false}, {Healthy: true}}},
		{Name: "api", Backends: []health.BackendHealth{{Healthy: false}}},
	}
	if got := healthyFrontends(cfg, pools); !reflect.DeepEqual(got, []string{"web"}) {
		t.Errorf("healthy frontends %v, want [web]", got)
	}
}
