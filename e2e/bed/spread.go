package bed

import (
	"fmt"
	"net/netip"
	"strings"
)

// SpreadVIPs are the VIPs of the spread bed (issue 13): as many as nodes,
// each with placement spread and a frontend of its own on the one pool.
var SpreadVIPs = []netip.Addr{VIP, netip.MustParseAddr("198.18.0.101"), netip.MustParseAddr("198.18.0.102")}

// SpreadFrontend names the frontend that listens on vip in SpreadConfig.
func SpreadFrontend(vip netip.Addr) string {
	return "web-" + strings.ReplaceAll(vip.String(), ".", "-")
}

// SpreadConfig renders node's config (VipdConfig) with SpreadVIPs, each
// placement: spread, instead of the one leader VIP; use it as
// VipdOptions.Render.
func SpreadConfig(o VipdOptions, node *Host) ([]byte, error) {
	cfg, err := VipdConfig(o, node)
	if err != nil {
		return nil, err
	}
	s := string(cfg)
	from, to := strings.Index(s, "vips:\n"), strings.Index(s, "pools:\n")
	if from < 0 || to < from {
		return nil, fmt.Errorf("spread config of %s: no vips and frontends sections in:\n%s", node.Name, s)
	}
	var b strings.Builder
	b.WriteString("vips:")
	for _, v := range SpreadVIPs {
		fmt.Fprintf(&b, "\n  - {address: %s, interface: %s, lifetime: %s, refresh: %s, placement: spread}", v, HostIface, o.Lifetime, o.Refresh)
	}
	b.WriteString("\nfrontends:")
	for _, v := range SpreadVIPs {
		fmt.Fprintf(&b, "\n  - {name: %s, listen: '%s', pool: web}", SpreadFrontend(v), netip.AddrPortFrom(v, FrontendPort))
	}
	b.WriteString("\n")
	return []byte(s[:from] + b.String() + s[to:]), nil
}
