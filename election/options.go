package election

import (
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

// Timing is the Raft timing of a cluster. Lease must stay below Heartbeat so a
// leader cut off from its quorum steps down before any follower can win
// (DESIGN rule 6).
type Timing struct {
	Heartbeat, Election, Lease time.Duration
}

// minTiming is the smallest interval hashicorp/raft accepts.
const minTiming = 5 * time.Millisecond

// TimingProfile returns a named timing: "lan" replaces a dead leader in
// about 200-300 ms, "wan" tolerates slow links and long pauses.
//
// The lan lease is 70 ms, not half the heartbeat: the lease is what makes a
// leader step down when its process is briefly starved of CPU, and 50 ms
// flapped under full CPU load on a 2-core VM where 70 ms held. The 30 ms left
// below the followers' earliest timeout, plus the vote round trips and the
// new leader's Barrier, keeps a cut-off leader withdrawn before a successor
// announces (rule 6).
func TimingProfile(name string) (Timing, error) {
	switch name {
	case "lan", "":
		return Timing{Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, Lease: 70 * time.Millisecond}, nil
	case "wan":
		return Timing{Heartbeat: time.Second, Election: time.Second, Lease: 500 * time.Millisecond}, nil
	}
	return Timing{}, fmt.Errorf("timing profile %q: want lan or wan", name)
}

// Validate reports whether raft accepts t and whether it keeps rule 6
// (Lease < Heartbeat <= Election).
func (t Timing) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"heartbeat", t.Heartbeat}, {"election", t.Election}, {"lease", t.Lease}} {
		if d.v < minTiming {
			return fmt.Errorf("timing %s %v: must be at least %v", d.name, d.v, minTiming)
		}
	}
	if t.Lease >= t.Heartbeat {
		return fmt.Errorf("timing lease %v must be shorter than heartbeat %v, or a cut-off leader could overlap its successor", t.Lease, t.Heartbeat)
	}
	if t.Heartbeat > t.Election {
		return fmt.Errorf("timing heartbeat %v must not exceed election %v", t.Heartbeat, t.Election)
	}
	return nil
}

// Fitness is this node's ability to serve, gossiped in memberlist metadata.
// The zero value means "link down"; a new Node starts as fit with no pools
// until SetFitness is called.
type Fitness struct {
	Pools, HealthyPools int
	LinkUp              bool
}

// Fit reports whether every pool has a healthy backend and the link is up.
func (f Fitness) Fit() bool { return f.LinkUp && f.HealthyPools >= f.Pools }

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

	AdminAddr string // advertised in metadata so peers can forward admin calls

	Logger     *zap.Logger
	Registerer prometheus.Registerer

	// wrapStream lets tests put a cuttable layer around the Raft transport.
	wrapStream func(raft.StreamLayer) raft.StreamLayer
	// wrapGossip does the same for the gossip transport.
	wrapGossip func(*memberlist.NetTransport) memberlist.NodeAwareTransport
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
	case "":
		o.Role = RoleVoter
	case RoleVoter, RoleWitness:
	default:
		return o, fmt.Errorf("role %q: want voter or witness", o.Role)
	}
	if o.Timing == (Timing{}) {
		o.Timing, _ = TimingProfile("lan")
	}
	if err := o.Timing.Validate(); err != nil {
		return o, err
	}
	if o.FitnessGrace < 0 {
		return o, fmt.Errorf("fitness grace %v: must not be negative", o.FitnessGrace)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
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
