package config

import (
	"errors"
	"slices"
	"testing"
)

// fieldErrors returns the key paths of the FieldErrors Parse joined in err.
func fieldErrors(t *testing.T, err error) []string {
	t.Helper()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %v is not a joined list of field errors", err)
	}
	var paths []string
	for _, e := range joined.Unwrap() {
		var fe *FieldError
		if errors.As(e, &fe) {
			paths = append(paths, fe.Path)
		}
	}
	return paths
}

func TestVIPPlacementAndRebalanceParse(t *testing.T) {
	cfg, err := Parse([]byte("cluster: {rebalance: auto}\nvips:\n  - {address: 198.18.0.100, interface: eth0, placement: leader}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Rebalance != RebalanceAuto || cfg.VIPs[0].Placement != PlacementLeader {
		t.Fatalf("rebalance %q, placement %q", cfg.Cluster.Rebalance, cfg.VIPs[0].Placement)
	}
}

// Spread VIPs are accepted, beside a leader VIP, with their preferences.
func TestSpreadPlacementIsAccepted(t *testing.T) {
	cfg, err := Parse([]byte("vips:\n  - {address: 198.18.0.100, interface: eth0}\n" +
		"  - {address: 198.18.0.101, interface: eth0, placement: spread, prefer: [lb-2, lb-1]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v := cfg.VIPs[0]; v.Placement != PlacementLeader {
		t.Errorf("vips[0].placement %q, want the default %q", v.Placement, PlacementLeader)
	}
	if v := cfg.VIPs[1]; v.Placement != PlacementSpread || !slices.Equal(v.Prefer, []string{"lb-2", "lb-1"}) {
		t.Errorf("vips[1]: placement %q prefer %v, want spread [lb-2 lb-1]", v.Placement, v.Prefer)
	}
}

func TestVIPPlacementErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"unknown placement", "vips:\n  - {address: 198.18.0.100, interface: eth0, placement: everywhere}\n",
			[]string{"vips[0].placement", `"everywhere"`, "must be one of leader, spread"}},
		{"prefer on a leader VIP", "vips:\n  - {address: 198.18.0.100, interface: eth0, prefer: [lb-2]}\n",
			[]string{"line 2", "vips[0].prefer", `"lb-2"`, "only used by placement: spread"}},
		{"a node preferred twice", "vips:\n  - address: 198.18.0.100\n    interface: eth0\n    placement: spread\n    prefer: [lb-2, lb-3, lb-2]\n",
			[]string{"line 5", "vips[0].prefer[2]", `"lb-2"`, "named twice"}},
		{"an empty preferred name", "vips:\n  - {address: 198.18.0.100, interface: eth0, placement: spread, prefer: [\"\"]}\n",
			[]string{"vips[0].prefer[0]", "empty node name"}},
		{"unknown rebalance", "cluster:\n  rebalance: sometimes\n",
			[]string{"line 2", "cluster.rebalance", `"sometimes"`, "must be one of manual, auto"}},
	} {
		t.Run(tc.name, func(t *testing.T) { parseFails(t, tc.doc, tc.want...) })
	}
}

// Preferring a node that has not joined (or is named nowhere in this
// file) is no error.
func TestPreferMayNameNodesThatJoinLater(t *testing.T) {
	if _, err := Parse([]byte("vips:\n  - {address: 198.18.0.100, interface: eth0, placement: spread, prefer: [lb-9, lb-7]}\n")); err != nil {
		t.Fatal(err)
	}
}
