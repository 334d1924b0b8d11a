package main

import (
	"slices"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
)

// A reload releases and claims only the VIPs whose holding changed: a new
// prefer list is placement's input and must not cost the VIP an outage.
func TestDiffVIPsReleasesOnlyWhatIsHeldDifferently(t *testing.T) {
	base := config.VIP{Address: "198.18.0.100", Interface: "lo", Placement: config.PlacementLeader,
		Lifetime: 3 * time.Second, Refresh: time.Second, AnnounceCount: 4, AnnounceInterval: 400 * time.Millisecond}
	other := base
	other.Address = "198.18.0.101"
	preferred := base
	preferred.Prefer = []string{"lb-2"}
	longer := base
	longer.Lifetime = 5 * time.Second

	for _, c := range []struct {
		what           string
		running, next  []config.VIP
		remove, addAll []string
	}{
		{"unchanged", []config.VIP{base, other}, []config.VIP{base, other}, nil, nil},
		{"prefer changed", []config.VIP{base}, []config.VIP{preferred}, nil, nil},
		{"lifetime changed", []config.VIP{base}, []config.VIP{longer}, []string{base.Address}, []string{base.Address}},
		{"one added", []config.VIP{base}, []config.VIP{base, other}, nil, []string{other.Address}},
		{"one removed", []config.VIP{base, other}, []config.VIP{other}, []string{base.Address}, nil},
	} {
		ch, err := diffVIPs(c.running, c.next)
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		var added []string
		for _, v := range ch.add {
			added = append(added, v.Address)
		}
		if !slices.Equal(ch.remove, c.remove) || !slices.Equal(added, c.addAll) {
			t.Errorf("%s: remove %v add %v, want remove %v add %v", c.what, ch.remove, added, c.remove, c.addAll)
		}
	}
}
