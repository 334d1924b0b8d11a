package bed

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
)

// Tables the fault injectors add; removing one heals that fault.
const (
	isolateTable = "e2e_isolate"
	dropToTable  = "e2e_dropto"
)

// SetLink sets the host's interface administratively up or down, as a pulled
// cable would look to the host (it sees its link go down).
func (h *Host) SetLink(up bool) error {
	l, err := h.nl.LinkByName(HostIface)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", HostIface, h.NS, err)
	}
	if up {
		err = h.nl.LinkSetUp(l)
	} else {
		err = h.nl.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set %s of %s up=%t: %w", HostIface, h.Name, up, err)
	}
	return nil
}

// Nft runs an nft script inside the host's namespace.
func (h *Host) Nft(script string) error {
	cmd := exec.Command("ip", "netns", "exec", h.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", h.NS, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Isolate drops every frame in and out of the host's interface (netdev
// ingress and egress hooks: IP, ARP and raw sockets alike) while the link
// stays up, so the host cannot tell it is cut off. Heal with Unisolate.
func (h *Host) Isolate() error {
	return h.Nft(fmt.Sprintf(`table netdev %[1]s {
	chain in { type filter hook ingress device %[2]q priority 0; policy drop; }
	chain out { type filter hook egress device %[2]q priority 0; policy drop; }
}
`, isolateTable, HostIface))
}

// Unisolate removes Isolate's drop.
func (h *Host) Unisolate() error {
	return h.Nft("delete table netdev " + isolateTable + "\n")
}

// DropTo drops the host's IPv4 traffic to dsts (both directions), e.g. to its
// backends so that only this host's health view differs. Heal with UndropTo.
func (h *Host) DropTo(dsts ...netip.Addr) error {
	set := make([]string, len(dsts))
	for i, d := range dsts {
		set[i] = d.String()
	}
	list := strings.Join(set, ", ")
	return h.Nft(fmt.Sprintf(`table ip %[1]s {
	chain out { type filter hook output priority 0; policy accept; ip daddr { %[2]s } drop; }
	chain in { type filter hook input priority 0; policy accept; ip saddr { %[2]s } drop; }
}
`, dropToTable, list))
}

// UndropTo removes DropTo's rules.
func (h *Host) UndropTo() error {
	return h.Nft("delete table ip " + dropToTable + "\n")
}

// RemoveAddr deletes addr (as a /32 or /128) from the host's interface, as an
// operator would have to after a keepalived that was killed with SIGKILL.
func (h *Host) RemoveAddr(addr netip.Addr) error {
	l, err := h.nl.LinkByName(HostIface)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", HostIface, h.NS, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}}
	if err := h.nl.AddrDel(l, a); err != nil {
		return fmt.Errorf("remove %s from %s: %w", addr, h.Name, err)
	}
	return nil
}
