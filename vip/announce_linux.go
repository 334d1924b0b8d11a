package vip

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/ipv6"
)

// sendTimeout bounds one announcement: a slow or blocked send must never hold
// up anything else (docs/architecture.md rule 2).
const sendTimeout = 200 * time.Millisecond

// announcer sends announcements for one VIP and watches for other hosts
// claiming it.
type announcer interface {
	// announce sends one announcement; it returns within sendTimeout.
	announce() error
	// readConflicts reads until the announcer is closed and calls conflict
	// with the MAC of every other host that claims the VIP.
	readConflicts(conflict func(mac net.HardwareAddr))
	close() error
}

// openAnnouncer opens the socket that announces vip on ifi. The VIP must be
// on the interface already (IPv6 binds to it).
func openAnnouncer(ifi *net.Interface, vip netip.Addr) (announcer, error) {
	if vip.Is4() {
		return openARP(ifi, vip)
	}
	return openNDP(ifi, vip)
}

// arpAnnouncer sends gratuitous ARP on a raw packet socket. It does not use
// arp.Dial, which refuses interfaces without an IPv4 address; only the packet
// format of mdlayher/arp is used.
type arpAnnouncer struct {
	conn *packet.Conn
	mac  net.HardwareAddr
	vip  netip.Addr
}

func openARP(ifi *net.Interface, vip netip.Addr) (*arpAnnouncer, error) {
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("open ARP socket on %s: interface has no Ethernet address", ifi.Name)
	}
	conn, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", ifi.Name, needsCap(err, "CAP_NET_RAW"))
	}
	return &arpAnnouncer{conn: conn, mac: ifi.HardwareAddr, vip: vip}, nil
}

// announce broadcasts a gratuitous ARP request and a gratuitous ARP reply
// (sender and target IP both the VIP): some hosts only honour one of them.
func (a *arpAnnouncer) announce() error {
	if err := a.conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return err
	}
	for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
		p, err := arp.NewPacket(op, a.mac, a.vip, ethernet.Broadcast, a.vip)
		if err != nil {
			return err
		}
		pb, err := p.MarshalBinary()
		if err != nil {
			return err
		}
		f := ethernet.Frame{Destination: ethernet.Broadcast, Source: a.mac, EtherType: ethernet.EtherTypeARP, Payload: pb}
		fb, err := f.MarshalBinary()
		if err != nil {
			return err
		}
		if _, err := a.conn.WriteTo(fb, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
			return fmt.Errorf("send gratuitous ARP %s for %s: %w", op, a.vip, err)
		}
	}
	return nil
}

// readConflicts reports ARP packets whose sender is the VIP at another MAC.
func (a *arpAnnouncer) readConflicts(conflict func(net.HardwareAddr)) {
	buf := make([]byte, 1514)
	for {
		n, _, err := a.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		var f ethernet.Frame
		var p arp.Packet
		if f.UnmarshalBinary(buf[:n]) != nil || f.EtherType != ethernet.EtherTypeARP || p.UnmarshalBinary(f.Payload) != nil {
			continue
		}
		if p.SenderIP == a.vip && !bytes.Equal(p.SenderHardwareAddr, a.mac) {
			conflict(p.SenderHardwareAddr)
		}
	}
}

func (a *arpAnnouncer) close() error { return a.conn.Close() }

// allNodes is ff02::1, where unsolicited neighbour advertisements go.
var allNodes = netip.MustParseAddr("ff02::1")

// ndpAnnouncer sends unsolicited neighbour advertisements from the VIP itself,
// as the Linux kernel does for its own addresses. Binding to the VIP (added
// with IFA_F_NODAD, so never tentative) avoids waiting for the link-local
// address to finish duplicate address detection.
type ndpAnnouncer struct {
	conn *ndp.Conn
	mac  net.HardwareAddr
	vip  netip.Addr
	mtu  int
}

func openNDP(ifi *net.Interface, vip netip.Addr) (*ndpAnnouncer, error) {
	if len(ifi.HardwareAddr) == 0 {
		return nil, fmt.Errorf("open NDP socket on %s: interface has no link-layer address", ifi.Name)
	}
	conn, _, err := ndp.Listen(ifi, ndp.Addr(vip.String()))
	if err != nil {
		return nil, fmt.Errorf("open NDP socket on %s: %w", ifi.Name, needsCap(err, "CAP_NET_RAW"))
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	if err := conn.SetICMPFilter(&f); err != nil {
		conn.Close()
		return nil, fmt.Errorf("filter NDP socket on %s: %w", ifi.Name, err)
	}
	return &ndpAnnouncer{conn: conn, mac: ifi.HardwareAddr, vip: vip, mtu: max(ifi.MTU, 1280)}, nil
}

// announce sends one unsolicited NA with Override and the target link-layer
// address to all nodes.
func (a *ndpAnnouncer) announce() error {
	if err := a.conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return err
	}
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: a.vip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: a.mac}},
	}
	if err := a.conn.WriteTo(na, nil, allNodes); err != nil {
		return fmt.Errorf("send unsolicited NA for %s: %w", a.vip, err)
	}
	return nil
}

// readConflicts reports NAs for the VIP that carry another MAC. It reads raw
// messages: ndp's ReadFrom drops those sourced from the VIP, which is exactly
// where another holder's announcements come from.
func (a *ndpAnnouncer) readConflicts(conflict func(net.HardwareAddr)) {
	buf := make([]byte, a.mtu)
	for {
		n, _, _, err := a.conn.ReadRaw(buf)
		if err != nil {
			return // closed
		}
		m, err := ndp.ParseMessage(buf[:n])
		if err != nil {
			continue
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok || na.TargetAddress != a.vip {
			continue
		}
		for _, o := range na.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target && !bytes.Equal(lla.Addr, a.mac) {
				conflict(lla.Addr)
			}
		}
	}
}

func (a *ndpAnnouncer) close() error { return a.conn.Close() }
