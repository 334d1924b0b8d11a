// Package config is vipd's configuration file: its schema, its defaults and
// its validation. A Config returned by Load or Parse is complete and valid;
// the rest of the daemon never parses strings from it again.
package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is one vipd node's whole configuration.
type Config struct {
	Node      Node       `yaml:"node"`
	Cluster   Cluster    `yaml:"cluster"`
	VIPs      []VIP      `yaml:"vips"`
	Frontends []Frontend `yaml:"frontends"`
	Pools     []Pool     `yaml:"pools"`
	// Kubernetes, when set, adds a spread VIP, frontends and pools for each
	// Service of type LoadBalancer (package kube).
	Kubernetes Kubernetes `yaml:"kubernetes,omitempty"`
	Admin      Admin      `yaml:"admin"`
	Log        Log        `yaml:"log"`
}

// Node names this node and says how it stops.
type Node struct {
	Name string `yaml:"name"`
	// ShutdownGrace is how long live connections may run after SIGTERM
	// before they are closed.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// Roles of a node in the cluster.
const (
	RoleVoter   = "voter"
	RoleWitness = "witness"
)

// Cluster is the Raft and gossip side.
type Cluster struct {
	RaftBind        string   `yaml:"raft_bind"`
	GossipBind      string   `yaml:"gossip_bind"`
	Join            []string `yaml:"join"`
	BootstrapExpect int      `yaml:"bootstrap_expect"`
	DataDir         string   `yaml:"data_dir"`
	SecretFile      string   `yaml:"secret_file"`
	Role            string   `yaml:"role"`
	Timing          Timing   `yaml:"timing"`
	// FitnessGrace is how long the leader may have no healthy pool (or a
	// down VIP link) before it hands leadership to a fit peer.
	FitnessGrace time.Duration `yaml:"fitness_grace"`
	// ReconnectTimeout is how long a member gossip believes dead (and that
	// did not leave on purpose) is redialled before it is forgotten.
	ReconnectTimeout time.Duration `yaml:"reconnect_timeout"`
	// Rebalance says whether spread VIPs also move to even the spread after
	// a node joins (RebalanceAuto), or only when their node stops being fit,
	// leaves, or the operator moves them (RebalanceManual).
	Rebalance string `yaml:"rebalance"`

	// TLS, when set, authenticates Raft with certificates from a CA instead
	// of the key pair derived from the cluster key.
	TLS ClusterTLS `yaml:"tls"`

	// SecretKeys are the keys in SecretFile, one per line, the first used for
	// sending and every one accepted (nil without a file).
	SecretKeys [][]byte `yaml:"-"`
}

// ClusterTLS is mutual TLS for Raft from a CA the operator runs. It is set
// when any of its files is; then all three are required.
type ClusterTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`

	// CertPEM, KeyPEM and CAPEM are the files' contents, read and checked by Load.
	CertPEM, KeyPEM, CAPEM []byte `yaml:"-"`
}

// Set reports whether cluster.tls is configured.
func (t ClusterTLS) Set() bool { return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" }

// Timing is the Raft timing: in the file a named profile ("lan", "fast", "wan") or
// the three durations. After Load the durations are always set (a profile
// resolved to its values) and valid; Profile names the profile they came
// from, empty when the file gave them.
type Timing struct {
	Profile   string        `yaml:"-"`
	Heartbeat time.Duration `yaml:"heartbeat"`
	Election  time.Duration `yaml:"election"`
	Lease     time.Duration `yaml:"lease"`
	// WatchLeader makes a follower check for a silent leader the moment its
	// last contact turns one heartbeat timeout old, rather than at raft's
	// random later tick: the fast profile's (docs/failover.md says what it
	// costs under load).
	WatchLeader bool `yaml:"-"`
}

// Timing profiles.
const (
	TimingLAN  = "lan"
	TimingFast = "fast"
	TimingWAN  = "wan"
)

// timingProfiles are the values of the named timings. "lan" replaces a dead
// leader in about 200-300 ms; "fast" in under 100 ms, for hosts where vipd
// gets the CPU when it wakes (docs/failover.md says under which load it
// holds); "wan" tolerates slow links and long pauses.
//
// The lan lease is 70 ms, not half the heartbeat: the lease is what makes a
// leader step down when its process is briefly starved of CPU, and 50 ms
// flapped under full CPU load on a 2-core VM where 70 ms held. The 30 ms left
// below the followers' earliest timeout, plus the vote round trips and the
// new leader's Barrier, keeps a cut-off leader withdrawn before a successor
// announces (docs/architecture.md rule 6).
//
// The fast lease leaves 15 ms below its 65 ms heartbeat: raft checks the
// lease at least 10 ms apart, so a cut-off leader steps down within 60 ms of
// its last contact with the quorum, before a follower may campaign. A 60 ms
// heartbeat (lease 45) failed over faster but lost its leader while the
// leader's own proxy filled the cores; 70 ms and more made the spread VIPs'
// lease (4H) too long for a dead follower's VIP to move within 300 ms
// (docs/failover.md has the runs).
var timingProfiles = map[string]Timing{
	TimingLAN:  {Profile: TimingLAN, Heartbeat: 100 * time.Millisecond, Election: 100 * time.Millisecond, Lease: 70 * time.Millisecond},
	TimingFast: {Profile: TimingFast, Heartbeat: 65 * time.Millisecond, Election: 65 * time.Millisecond, Lease: 50 * time.Millisecond, WatchLeader: true},
	TimingWAN:  {Profile: TimingWAN, Heartbeat: time.Second, Election: time.Second, Lease: 500 * time.Millisecond},
}

// TimingProfile returns the durations of the named profile, false for a
// name that is none.
func TimingProfile(name string) (Timing, bool) {
	t, ok := timingProfiles[name]
	return t, ok
}

// TimingProfiles are the profiles' names, sorted.
func TimingProfiles() []string { return slices.Sorted(maps.Keys(timingProfiles)) }

func (t *Timing) decodeNode(d *decoder, n *yaml.Node, path string) {
	if n.Kind == yaml.ScalarNode {
		t.Profile = n.Value
		return
	}
	t.Profile = ""
	d.decodeStruct(n, reflectValue(t), path)
}

// Rebalance modes.
const (
	RebalanceManual = "manual"
	RebalanceAuto   = "auto"
)

// VIP placements.
const (
	PlacementLeader = "leader" // held by the Raft leader
	PlacementSpread = "spread" // assigned to one fit node, under a lease
)

// VIP is one virtual address and the interface that carries it.
type VIP struct {
	Address   string `yaml:"address"`
	Interface string `yaml:"interface"`
	// Placement is which node holds it: PlacementLeader or PlacementSpread.
	Placement string `yaml:"placement"`
	// Prefer names the nodes a spread VIP goes to first, in order; they
	// need not be members yet.
	Prefer []string `yaml:"prefer"`
	// Lifetime is the kernel valid_lft of the address: a crashed or frozen
	// holder loses the VIP when it runs out.
	Lifetime time.Duration `yaml:"lifetime"`
	// Refresh is how often the holder renews the lifetime and re-announces.
	Refresh          time.Duration `yaml:"refresh"`
	AnnounceCount    int           `yaml:"announce_count"`
	AnnounceInterval time.Duration `yaml:"announce_interval"`
}

// Frontend is one listener and the pool it sends connections to.
type Frontend struct {
	Name           string        `yaml:"name"`
	Listen         string        `yaml:"listen"`
	Pool           string        `yaml:"pool"`
	MaxConnections int           `yaml:"max_connections"`
	IdleTimeout    time.Duration `yaml:"idle_timeout"`
	// MaxConnectionsPerSource caps the live connections of one client IP
	// (the PROXY source on an accept_proxy frontend); 0: no limit.
	MaxConnectionsPerSource int         `yaml:"max_connections_per_source"`
	AcceptProxy             AcceptProxy `yaml:"accept_proxy,omitempty"`
}

// AcceptProxy makes a frontend take a PROXY v1/v2 header from the sources
// in From; it is on when From lists any.
type AcceptProxy struct {
	From    Prefixes      `yaml:"from"`
	Timeout time.Duration `yaml:"timeout"` // for the whole header
}

// Prefixes is a list of CIDR prefixes (198.18.0.0/24, 2001:2::/48); a
// bare address is its own /32 or /128.
type Prefixes []netip.Prefix

func (ps *Prefixes) decodeNode(d *decoder, n *yaml.Node, path string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n, "expected a list of CIDR prefixes, found %s", kindName(n))
		return
	}
	*ps = make(Prefixes, 0, len(n.Content))
	for i, item := range n.Content {
		itemPath := fmt.Sprintf("%s[%d]", path, i)
		d.lines[itemPath] = item.Line
		if !d.expectScalar(item, itemPath) {
			continue
		}
		p, err := netip.ParsePrefix(item.Value)
		if err != nil {
			a, aerr := netip.ParseAddr(item.Value)
			if aerr != nil || a.Zone() != "" {
				d.fail(itemPath, item, "not a CIDR prefix such as 198.18.0.0/24")
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		*ps = append(*ps, p.Masked())
	}
}

// Balancing algorithms.
const (
	AlgorithmRoundRobin = "round_robin"
	AlgorithmLeastConn  = "least_conn"
	AlgorithmRandom2    = "random2"
	AlgorithmSourceHash = "source_hash"
)

// Pool is a set of backends with an algorithm and a health check.
type Pool struct {
	Name           string        `yaml:"name"`
	Algorithm      string        `yaml:"algorithm"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	ProxyProtocol  string        `yaml:"proxy_protocol"`
	// SlowStart ramps a recovered backend's weight up over this long.
	SlowStart time.Duration `yaml:"slow_start"`
	Backends  []Backend     `yaml:"backends"`
	Health    Health        `yaml:"health"`
	// Served marks a pool another source serves (a Kubernetes Service's):
	// its VIP goes to a node with a healthy backend in it, but the pool
	// does not count toward the node's fitness to lead.
	Served bool `yaml:"-"`
}

// Backend is one server of a pool.
type Backend struct {
	Address string `yaml:"address"`
	Weight  int    `yaml:"weight"`
}

// Health check kinds.
const (
	CheckTCP   = "tcp"
	CheckHTTP  = "http"
	CheckHTTPS = "https"
	CheckNone  = "none"
)

// Initial health states.
const (
	InitialHealthy   = "healthy"
	InitialUnhealthy = "unhealthy"
)

// Health is a pool's active check.
type Health struct {
	Type          string        `yaml:"type"`
	Path          string        `yaml:"path"`
	Host          string        `yaml:"host"`
	ExpectStatus  []StatusRange `yaml:"expect_status"`
	ExpectBody    string        `yaml:"expect_body"`
	TLSSkipVerify bool          `yaml:"tls_skip_verify"`
	ServerName    string        `yaml:"server_name"`
	CAFile        string        `yaml:"ca_file"`
	CertFile      string        `yaml:"cert_file"`
	KeyFile       string        `yaml:"key_file"`
	Interval      time.Duration `yaml:"interval"`
	// FastInterval is the check interval while a backend's state is changing.
	FastInterval time.Duration `yaml:"fast_interval"`
	Timeout      time.Duration `yaml:"timeout"`
	Rise         int           `yaml:"rise"`
	Fall         int           `yaml:"fall"`
	// Initial is the state before the first check; empty for type none,
	// whose backends are always available.
	Initial string `yaml:"initial"`
}

// StatusRange is an inclusive range of HTTP status codes; in YAML a number
// (200) or a range ("200-299").
type StatusRange struct{ Min, Max int }

func (r *StatusRange) decodeNode(d *decoder, n *yaml.Node, path string) {
	if !d.expectScalar(n, path) {
		return
	}
	lo, hi, isRange := strings.Cut(n.Value, "-")
	min, err1 := strconv.Atoi(strings.TrimSpace(lo))
	max, err2 := min, error(nil)
	if isRange {
		max, err2 = strconv.Atoi(strings.TrimSpace(hi))
	}
	switch {
	case err1 != nil || err2 != nil:
		d.fail(path, n, `not a status code or range (use 200 or "200-299")`)
	case min < 100 || max > 599 || min > max:
		d.fail(path, n, "status codes run from 100 to 599, low to high")
	default:
		*r = StatusRange{Min: min, Max: max}
	}
}

func (r StatusRange) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(r.Min)
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// Kubernetes is the Kubernetes mode: Services of type LoadBalancer get their
// address from AddressPools and vipd carries their traffic. The section is
// set when Interface is (validation requires it in a present section).
type Kubernetes struct {
	// Kubeconfig is the file that names the API server and credentials;
	// empty: the in-cluster service account.
	Kubeconfig string `yaml:"kubeconfig"`
	// Class is the spec.loadBalancerClass served; empty: Services without one.
	Class string `yaml:"class"`
	// Interface carries the Services' VIPs on every node.
	Interface    string        `yaml:"interface"`
	AddressPools []AddressPool `yaml:"address_pools"`
}

// Enabled says whether the config has a kubernetes section.
func (k Kubernetes) Enabled() bool { return k.Interface != "" }

// AddressPool is a named set of addresses for Services.
type AddressPool struct {
	Name string `yaml:"name"`
	// Addresses are CIDRs (198.18.0.200/29) or ranges
	// (198.18.0.210-198.18.0.219), IPv4 or IPv6.
	Addresses []string `yaml:"addresses"`
	// Namespaces limits the pool to Services of these namespaces; empty:
	// every namespace.
	Namespaces []string `yaml:"namespaces"`
}

// Admin is the admin HTTP server (metrics, health, status, vipctl's API)
// and who may call it. The daemon reads the files named here at start.
type Admin struct {
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token that mutating calls (and reads, when
	// OpenReads is off) must present.
	TokenFile string   `yaml:"token_file"`
	TLS       AdminTLS `yaml:"tls"`
	// OpenReads lets GET requests (/healthz, /readyz, /metrics, /status, the
	// status page) through without credentials. Default: Loopback().
	OpenReads bool `yaml:"open_reads"`
	// Insecure allows a non-loopback listener without authentication.
	Insecure bool `yaml:"insecure"`
}

// AdminTLS serves the admin API over TLS; with ClientCAFile, a client
// certificate issued by that CA authenticates the caller (mutual TLS).
type AdminTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled says whether the admin API speaks TLS.
func (t AdminTLS) Enabled() bool { return t.CertFile != "" }

// Loopback says whether only this host can reach the listener: its host is
// a loopback IP (127.0.0.0/8, ::1) or "localhost". A wildcard (0.0.0.0, ::,
// an empty host) or any other address is reachable from the network.
func (a Admin) Loopback() bool {
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Authenticated says whether callers must prove who they are: with a bearer
// token, a client certificate, or both.
func (a Admin) Authenticated() bool { return a.TokenFile != "" || a.TLS.ClientCAFile != "" }

// Log settings.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}
