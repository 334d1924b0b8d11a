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

func TestVIPPlacementErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"spread is refused until it is wired", "vips:\n  - {address: 198.18.0.100, interface: eth0, placement: spread}\n",
			[]string{"line 2", "vips[0].placement", `"spread"`, "not wired yet", "placement: leader"}},
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
// file) is no error: the only one for a spread VIP today is that spread
// is not wired.
func TestPreferMayNameNodesThatJoinLater(t *testing.T) {
	err := parseFails(t, "vips:\n  - {address: 198.18.0.100, interface: eth0, placement: spread, prefer: [lb-9, lb-7]}\n")
	if paths := fieldErrors(t, err); !slices.Equal(paths, []string{"vips[0].placement"}) {
		t.Fatalf("errors at %v (%v), want only vips[0].placement", paths, err)
	}
}
