package main

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/ownership"
	"github.com/vipd/vipd/vip"
)

// vipSet is this node's VIPs: each is in the vip.Manager (which keeps what
// they share) and held by an Owner of its own in the ownership.Group,
// named by its address. Only the reconciler's target changes it after
// start, one reload at a time.
type vipSet struct {
	mgr    *vip.Manager
	owners *ownership.Group
	byAddr map[string]*vip.VIP // the handles of the VIPs of the running config
	owner  map[string]string   // address -> the name of its Owner
}

// add puts c in the Manager and gives it an Owner, which holds it at once
// if this node leads. live is a VIP added to a running node: a leftover of
// its address is cleared first, as at start (docs/architecture.md rule 4).
func (s *vipSet) add(c config.VIP, live bool) error {
	v, err := s.mgr.Add(vipConfig(c))
	if err != nil {
		return err
	}
	if live {
		if err := v.RemoveStale(); err != nil {
			return errors.Join(err, s.mgr.Remove(v))
		}
	}
	name, add := c.Address, s.owners.Add
	if c.Placement == config.PlacementSpread {
		// Held under a lease: the spread Runner sends its Owner hold and
		// release, under the name the lease protocol uses.
		name, add = spreadKey(c.Address), s.owners.AddSeparate
	}
	if err := add(name, v); err != nil {
		return errors.Join(err, s.mgr.Remove(v))
	}
	s.byAddr[c.Address], s.owner[c.Address] = v, name
	return nil
}

// remove stops the VIP's Owner, which releases it (the address is deleted
// before this returns), then takes it out of the Manager.
func (s *vipSet) remove(address string) error {
	v := s.byAddr[address]
	if err := s.owners.Remove(s.owner[address]); err != nil {
		return err
	}
	delete(s.byAddr, address)
	delete(s.owner, address)
	return s.mgr.Remove(v)
}

// vipChange is what a reload does to the VIPs: which to release and which
// to claim (a changed VIP is in both). VIPs in neither are not touched.
type vipChange struct {
	remove []string
	add    []config.VIP
}

// diffVIPs works out the change from running to next and checks that this
// node can hold every VIP it adds: its interface must exist here, or every
// node that leads would fail to claim it and hand leadership over, moving
// the VIPs that work too. Nothing changes here.
func diffVIPs(running, next []config.VIP) (vipChange, error) {
	var ch vipChange
	for _, r := range running {
		i := slices.IndexFunc(next, func(n config.VIP) bool { return n.Address == r.Address })
		if i < 0 || !sameHold(next[i], r) {
			ch.remove = append(ch.remove, r.Address)
		}
	}
	for i, n := range next {
		if slices.ContainsFunc(running, func(r config.VIP) bool { return sameHold(r, n) }) {
			continue
		}
		if _, err := net.InterfaceByName(n.Interface); err != nil {
			return vipChange{}, fmt.Errorf("vips[%d].interface: %q: no such interface on this node (%v)", i, n.Interface, err)
		}
		ch.add = append(ch.add, n)
	}
	return ch, nil
}

// sameHold reports whether a and b are held alike. A change of prefer alone
// moves nothing (placement reads it); any other change is a release and a
// claim.
func sameHold(a, b config.VIP) bool {
	return vipConfig(a) == vipConfig(b) && a.Placement == b.Placement
}

// apply releases what ch removes, then claims what it adds. Everything it
// can refuse was checked by diffVIPs, so it fails only while the daemon
// stops (the Group takes no new Owner then).
func (s *vipSet) apply(ch vipChange) error {
	var errs []error
	for _, addr := range ch.remove {
		if err := s.remove(addr); err != nil {
			errs = append(errs, fmt.Errorf("release VIP %s: %w", addr, err))
		}
	}
	for _, c := range ch.add {
		if err := s.add(c, true); err != nil {
			errs = append(errs, fmt.Errorf("add VIP %s: %w", c.Address, err))
		}
	}
	return errors.Join(errs...)
}

// status lists the VIPs with their placement and holder as this node
// knows them: itself while it holds a VIP; for a spread VIP, else its
// settled assignee in the replicated assignment; for a leader VIP, else
// the leader, for a follower that sees the leader alive and not reporting
// a failed hold (gossip carries one failure flag for all of a node's
// VIPs, so one VIP that the leader fails to claim blanks the holder of
// all); else "".
func (s *vipSet) status(es election.Status, in election.Intent, placements map[string]string) []VIPStatus {
	settled := map[string]string{}
	for _, a := range in.VIPs {
		if a.Settled {
			settled[a.VIP] = a.Node
		}
	}
	leaderHolds := false
	if es.Leader != "" && es.Leader != es.Node {
		for _, m := range es.Members {
			if m.Name == es.Leader {
				leaderHolds = m.Alive && !m.VIPHoldFailed
			}
		}
	}
	out := []VIPStatus{}
	for _, v := range s.mgr.Status() {
		st := VIPStatus{Status: v, Placement: placements[spreadKey(v.Address)]}
		if st.Placement == "" {
			st.Placement = config.PlacementLeader
		}
		switch {
		case v.Held:
			st.Holder = es.Node
		case st.Placement == config.PlacementSpread:
			st.Holder = settled[spreadKey(v.Address)]
		case leaderHolds:
			st.Holder = es.Leader
		}
		out = append(out, st)
	}
	return out
}
