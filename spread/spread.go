// Package spread runs the spread VIP leases of docs/architecture.md
// ("Spread VIPs: leases") on one node: the holder side on every voter (ask
// the leader, hold what it grants, let go at the lease's end), the granter
// side while this node is the confirmed leader (record the term, place the
// VIPs, settle moves when the lease rules allow, answer requests in
// rounds), and the lease server on the Raft port. The rules themselves are
// packages lease and placement; this package applies them to the
// election, the wire and the holds, each behind a small interface, so that
// every decision is tested with fakes.
package spread

import (
	"context"
	"net"

	"go.uber.org/zap"

	"github.com/vipd/vipd/election"
	"github.com/vipd/vipd/lease"
	"github.com/vipd/vipd/placement"
)

// Cluster is what the election offers: the replicated assignment, rounds,
// the view of the members, and lease connections to the leader.
type Cluster interface {
	RecordLeadership() (election.LeaderRecord, error)
	AssignVIP(vip, node string) error
	SettleVIP(vip, node string) error
	ForgetVIP(vip string) error
	Round(term uint64) error
	Intent() election.Intent
	Status() election.Status
	DialLease(ctx context.Context, raftAddr string) (net.Conn, error)
}

var _ Cluster = (*election.Node)(nil)

// Holds claims and releases this node's spread VIPs. Hold starts holding
// (the claim runs on its own); Release returns once the address is gone.
type Holds interface {
	Hold(vip string)
	Release(vip string)
}

// Options configure a Runner.
type Options struct {
	Node    string // this node's name
	Timing  lease.Timing
	Clock   lease.Clock
	Cluster Cluster
	Holds   Holds
	// VIPs lists the spread VIPs of the running config (canonical
	// addresses) with the frontends that listen on each.
	VIPs func() []placement.VIP
	// Rebalance is cluster.rebalance: placement.Manual or placement.Auto.
	Rebalance func() string
	// Healthy lists the frontends this node has a healthy backend for.
	Healthy func() []string
	Metrics *Metrics // nil: none
	Logger  *zap.Logger
}

// Leadership is a change of this node's confirmed leadership, as the
// election announces it.
type Leadership struct {
	Leader bool
	Term   uint64
}
