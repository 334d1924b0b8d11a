package election

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Role is what a node may do in the cluster.
type Role string

const (
	// RoleVoter is a full node: it votes and may hold the VIP.
	RoleVoter Role = "voter"
	// RoleWitness votes but never holds the VIP: it hands leadership away at once.
	RoleWitness Role = "witness"
)

// Timing is the Raft timing of a cluster, resolved and checked by config
// (profiles, Lease < Heartbeat <= Election: docs/architecture.md rule 6). New only refuses
// zero durations and what hashicorp/raft itself rejects.
type Timing struct {
	Heartbeat, Election, Lease time.Duration
	// WatchLeader runs the leader watch (leaderwatch.go): a follower checks
	// for a silent leader the moment the heartbeat timeout runs out.
	WatchLeader bool
}

// Fitness is this node's ability to serve, gossiped in memberlist metadata.
// The zero value means "link down"; a new Node starts as fit with no pools
// until SetFitness is called.
type Fitness struct {
	Pools, HealthyPools int
	LinkUp              bool // the VIP interface's link is up
	// VIPHoldFailed is set while this node's last claim of its VIPs failed
	// (a missing capability, a vanished interface), until a claim succeeds:
	// a leader that cannot hold the VIPs must hand them on. Its zero value,
	// no failure, is right for followers, for nodes without VIPs and for
	// peers too old to send it.
	VIPHoldFailed bool
}

// Fit reports whether every pool has a healthy backend, the link is up and
// no VIP claim failed.
func (f Fitness) Fit() bool { return f.LinkUp && !f.VIPHoldFailed && f.HealthyPools >= f.Pools }

// Options configure a Node. New validates them.
type Options struct {
	NodeName, RaftBind, GossipBind string
	Join                           []string
	BootstrapExpect                int
	DataDir                        string
	// SecretKeys are the cluster keys: gossip is encrypted and Raft runs over
	// TLS with a key pair derived from them. The first is used for sending
	// and presenting, every one is accepted (key rotation). Empty: no
	// encryption, no authentication.
	SecretKeys [][]byte
	// TLS, when set, authenticates Raft with this CA-issued identity instead
	// of the derived key pair. It needs SecretKeys for gossip.
	TLS *TLSIdentity

	Role         Role
	Timing       Timing
	FitnessGrace time.Duration
	// ReconnectTimeout is how long a member gossip believes dead (and that
	// did not leave on purpose) is redialled before it is forgotten. Raft
	// membership is not touched: that takes a leave or an operator's Remove.
	ReconnectTimeout time.Duration

	AdminAddr string // advertised in metadata so peers can forward admin calls

	// Released, when set, returns once the consumers of this node's events
	// have acted on the loss numbered seq (Event.Seq) or a later one: what
	// this node held as leader is released. A leadership transfer withdraws
	// the gain and waits for it before it asks raft, because raft's
	// TimeoutNow lets the target campaign at once, without the election
	// timeout that rule 6 counts on. nil: a transfer waits for nothing.
	Released func(ctx context.Context, seq uint64) error

	Logger     *zap.Logger
	Registerer prometheus.Registerer

	// wrapStream lets tests put a cuttable layer around the Raft transport.
	wrapStream func(raft.StreamLayer) raft.StreamLayer
	// wrapGossip does the same for the gossip transport.
	wrapGossip func(*memberlist.NetTransport) memberlist.NodeAwareTransport
	// now lets tests move the clock that reaps dead members.
	now func() time.Time
}

// validate checks opts and fills defaults; it returns a copy.
func (o Options) validate() (Options, error) {
	if o.NodeName == "" {
		return o, errors.New("node name is empty")
	}
	if len(o.NodeName) > maxNameLen {
		return o, fmt.Errorf("node name %q: longer than %d bytes", o.NodeName, maxNameLen)
	}
	if err := checkHostPort("raft bind", o.RaftBind, false); err != nil {
		return o, err
	}
	if err := checkHostPort("gossip bind", o.GossipBind, true); err != nil {
		return o, err
	}
	if o.BootstrapExpect < 0 {
		return o, fmt.Errorf("bootstrap_expect %d: must not be negative", o.BootstrapExpect)
	}
	if o.DataDir == "" {
		return o, errors.New("data dir is empty")
	}
	for i, k := range o.SecretKeys {
		switch len(k) {
		case 16, 24, 32:
		default:
			return o, fmt.Errorf("secret key %d is %d bytes: want 16, 24 or 32", i+1, len(k))
		}
	}
	switch o.Role {
	case RoleVoter, RoleWitness:
	default:
		return o, fmt.Errorf("role %q: want voter or witness", o.Role)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"Timing.Heartbeat", o.Timing.Heartbeat}, {"Timing.Election", o.Timing.Election},
		{"Timing.Lease", o.Timing.Lease}, {"ReconnectTimeout", o.ReconnectTimeout},
	} {
		if d.v <= 0 {
			return o, fmt.Errorf("%s %v: must be positive (config resolves it)", d.name, d.v)
		}
	}
	if o.FitnessGrace < 0 {
		return o, fmt.Errorf("fitness grace %v: must not be negative", o.FitnessGrace)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o, nil
}

// checkHostPort validates a "host:port" with a literal IP host. A raft bind
// is advertised as is, so it must name a concrete address.
func checkHostPort(what, addr string, allowUnspecified bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("%s %q: host must be an IP address", what, addr)
	}
	if ip.IsUnspecified() && !allowUnspecified {
		return fmt.Errorf("%s %q: is advertised to peers, so it must not be unspecified", what, addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("%s %q: port must be 1-65535", what, addr)
	}
	return nil
}
