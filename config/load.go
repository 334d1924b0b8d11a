package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load reads, defaults and validates the config file at path. The error, if
// any, lists every problem found, each with its key path, line and value.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse defaults and validates a config document. An empty document is the
// single-node default: a plain load balancer with no VIP.
func Parse(data []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(data, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(data, err)
	default:
		return nil, fmt.Errorf("line %d: a second YAML document starts here; vipd reads exactly one", extra.Line)
	}
	cfg := &Config{}
	d := newDecoder()
	if len(root.Content) == 1 && !isNull(root.Content[0]) {
		d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	v := &validator{decoder: d}
	v.applyDefaults(cfg)
	v.validate(cfg)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return cfg, nil
}

// yamlError is a YAML syntax error with its line. yaml.v3 gives none for a
// problem on the first line, a byte YAML forbids or an unknown anchor; then
// the line is the last of the shortest run of leading lines that fails the
// same way.
func yamlError(data []byte, err error) error {
	if strings.Contains(err.Error(), "line ") {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	for end, line := 0, 1; end < len(data); line++ {
		if i := bytes.IndexByte(data[end:], '\n'); i >= 0 {
			end += i + 1
		} else {
			end = len(data)
		}
		if e := firstYAMLError(data[:end]); e != nil && e.Error() == err.Error() {
			return fmt.Errorf("not valid YAML: line %d: %w", line, err)
		}
	}
	return fmt.Errorf("not valid YAML: %w", err)
}

// firstYAMLError returns the first syntax error in data's documents.
func firstYAMLError(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func reflectValue(p any) reflect.Value { return reflect.ValueOf(p).Elem() }

// Defaults that are not obvious from the key name.
const (
	DefaultDataDir          = "/var/lib/vipd"
	DefaultRaftBind         = "127.0.0.1:7000"
	DefaultGossipBind       = "127.0.0.1:7001"
	DefaultAdminListen      = "127.0.0.1:9900"
	DefaultShutdownGrace    = 10 * time.Second
	DefaultFitnessGrace     = time.Second
	DefaultReconnectTimeout = 72 * time.Hour // Serf's: a member down over a long weekend comes back by itself
	DefaultVIPLifetime      = 3 * time.Second
	DefaultVIPRefresh       = time.Second
	DefaultAnnounceCount    = 4
	DefaultAnnounceInterval = 400 * time.Millisecond // 4 × 400 ms spans Linux's 1 s arp locktime
	DefaultMaxConnections   = 10000
	DefaultIdleTimeout      = time.Hour
	DefaultProxyTimeout     = 3 * time.Second
	DefaultConnectTimeout   = time.Second
	DefaultCheckInterval    = time.Second
	DefaultCheckTimeout     = 500 * time.Millisecond
	DefaultRise             = 2
	DefaultFall             = 3
)

// Limits that are rules of the components behind the config, checked here so
// that every rule lives in one place and the components receive valid values.
const (
	// MinRaftTiming is the shortest heartbeat, election or lease
	// hashicorp/raft accepts.
	MinRaftTiming = 5 * time.Millisecond
	// MinVIPLifetime is the shortest VIP lifetime: the kernel counts
	// lifetimes in whole seconds, and a refresh must fit in half of one.
	MinVIPLifetime = 2 * time.Second
)

type validator struct{ *decoder }

// setDefault gives field its default when the file does not set its key, so
// an explicit zero (weight: 0, max_connections: 0) reaches validation and is
// reported rather than silently replaced.
func setDefault[T any](v *validator, path string, field *T, def T) {
	if !v.set[path] {
		*field = def
	}
}

func (v *validator) applyDefaults(c *Config) {
	if c.Node.Name == "" {
		if host, err := os.Hostname(); err == nil {
			c.Node.Name = host
		}
	}
	setDefault(v, "node.shutdown_grace", &c.Node.ShutdownGrace, DefaultShutdownGrace)
	setDefault(v, "cluster.raft_bind", &c.Cluster.RaftBind, DefaultRaftBind)
	setDefault(v, "cluster.gossip_bind", &c.Cluster.GossipBind, DefaultGossipBind)
	if len(c.Cluster.Join) == 0 {
		setDefault(v, "cluster.bootstrap_expect", &c.Cluster.BootstrapExpect, 1)
	}
	setDefault(v, "cluster.data_dir", &c.Cluster.DataDir, DefaultDataDir)
	setDefault(v, "cluster.role", &c.Cluster.Role, RoleVoter)
	setDefault(v, "cluster.timing", &c.Cluster.Timing, Timing{Profile: TimingLAN})
	if p, ok := timingProfiles[c.Cluster.Timing.Profile]; ok {
		c.Cluster.Timing = p
	}
	setDefault(v, "cluster.fitness_grace", &c.Cluster.FitnessGrace, DefaultFitnessGrace)
	setDefault(v, "cluster.reconnect_timeout", &c.Cluster.ReconnectTimeout, DefaultReconnectTimeout)
	setDefault(v, "cluster.rebalance", &c.Cluster.Rebalance, RebalanceManual)
	for i := range c.VIPs {
		vip, path := &c.VIPs[i], fmt.Sprintf("vips[%d].", i)
		setDefault(v, path+"placement", &vip.Placement, PlacementLeader)
		setDefault(v, path+"lifetime", &vip.Lifetime, DefaultVIPLifetime)
		setDefault(v, path+"refresh", &vip.Refresh, DefaultVIPRefresh)
		setDefault(v, path+"announce_count", &vip.AnnounceCount, DefaultAnnounceCount)
		setDefault(v, path+"announce_interval", &vip.AnnounceInterval, DefaultAnnounceInterval)
	}
	for i := range c.Frontends {
		fe, path := &c.Frontends[i], fmt.Sprintf("frontends[%d].", i)
		setDefault(v, path+"max_connections", &fe.MaxConnections, DefaultMaxConnections)
		setDefault(v, path+"idle_timeout", &fe.IdleTimeout, DefaultIdleTimeout)
		if v.set[path+"accept_proxy"] { // off without the section: no timeout to default
			setDefault(v, path+"accept_proxy.timeout", &fe.AcceptProxy.Timeout, DefaultProxyTimeout)
		}
	}
	for i := range c.Pools {
		p, path := &c.Pools[i], fmt.Sprintf("pools[%d].", i)
		setDefault(v, path+"algorithm", &p.Algorithm, AlgorithmRoundRobin)
		setDefault(v, path+"connect_timeout", &p.ConnectTimeout, DefaultConnectTimeout)
		setDefault(v, path+"proxy_protocol", &p.ProxyProtocol, "none")
		for j := range p.Backends {
			setDefault(v, fmt.Sprintf("%sbackends[%d].weight", path, j), &p.Backends[j].Weight, 1)
		}
		h, path := &p.Health, path+"health."
		setDefault(v, path+"type", &h.Type, CheckTCP)
		if h.Type == CheckHTTP || h.Type == CheckHTTPS {
			setDefault(v, path+"path", &h.Path, "/")
			setDefault(v, path+"expect_status", &h.ExpectStatus, []StatusRange{{Min: 200, Max: 399}})
		}
		setDefault(v, path+"interval", &h.Interval, DefaultCheckInterval)
		setDefault(v, path+"fast_interval", &h.FastInterval, h.Interval/2)
		setDefault(v, path+"timeout", &h.Timeout, min(DefaultCheckTimeout, h.Interval))
		setDefault(v, path+"rise", &h.Rise, DefaultRise)
		setDefault(v, path+"fall", &h.Fall, DefaultFall)
		if h.Type != CheckNone { // type none has no state to start in: always available
			setDefault(v, path+"initial", &h.Initial, InitialUnhealthy)
		}
	}
	setDefault(v, "admin.listen", &c.Admin.Listen, DefaultAdminListen)
	setDefault(v, "admin.open_reads", &c.Admin.OpenReads, c.Admin.Loopback())
	setDefault(v, "log.level", &c.Log.Level, "info")
	setDefault(v, "log.format", &c.Log.Format, "json")
}

// bad records a problem with the value at path; the line comes from the
// decoder's record of the file (0 when the key was not in the file).
func (v *validator) bad(path, value, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{
		Path: path, Line: v.lines[path], Value: value, Msg: fmt.Sprintf(format, args...),
	})
}

func (v *validator) oneOf(path, value string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	v.bad(path, value, "must be one of %s", strings.Join(allowed, ", "))
}

func (v *validator) hostPort(path, value string) {
	if value == "" {
		v.bad(path, "", "required (host:port)")
		return
	}
	host, port, err := net.SplitHostPort(value)
	if err != nil {
		var addrErr *net.AddrError
		if errors.As(err, &addrErr) {
			err = errors.New(addrErr.Err)
		}
		v.bad(path, value, "not host:port: %v", err)
		return
	}
	if _, err := netip.ParseAddr(host); err != nil && host != "" && host != "localhost" {
		v.bad(path, value, "host must be an IP address")
		return
	}
	if p, err := net.LookupPort("tcp", port); err != nil || p == 0 {
		v.bad(path, value, "port must be 1-65535")
	}
}

// peerAddr checks an address that other nodes dial: it needs a concrete IP.
func (v *validator) peerAddr(path, value string) {
	before := len(v.errs)
	v.hostPort(path, value)
	if len(v.errs) > before {
		return
	}
	if host, _, err := net.SplitHostPort(value); err == nil {
		if ip, err := netip.ParseAddr(host); err != nil || ip.IsUnspecified() {
			v.bad(path, value, "other nodes dial this address: give a concrete IP, not a wildcard or a name")
		}
	}
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.bad(path, d.String(), "must be greater than zero")
	}
}

func (v *validator) atLeast(path string, n, least int) {
	if n < least {
		v.bad(path, fmt.Sprint(n), "must be at least %d", least)
	}
}

func (v *validator) validate(c *Config) {
	if c.Node.Name == "" {
		v.bad("node.name", "", "required (the hostname could not be read)")
	}
	v.validateCluster(&c.Cluster)
	v.validateServed(c)
	v.validateAdmin(&c.Admin)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "console")
}

// validateServed checks what the node serves: the VIPs, pools and
// frontends, and the Kubernetes section whose addresses must not clash
// with them.
func (v *validator) validateServed(c *Config) {
	v.validateVIPs(c.VIPs)
	pools := v.validatePools(c.Pools)
	v.validateFrontends(c.Frontends, pools)
	v.validateKubernetes(c)
}

func (v *validator) validateAdmin(a *Admin) {
	before := len(v.errs)
	v.hostPort("admin.listen", a.Listen)
	if t := a.TLS; t.Enabled() || t.KeyFile != "" || t.ClientCAFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			v.bad("admin.tls.cert_file", t.CertFile, "admin.tls needs both cert_file and key_file")
		}
	}
	if len(v.errs) == before && !a.Loopback() && !a.Authenticated() && !a.Insecure {
		v.bad("admin.listen", a.Listen, "not a loopback address, and the admin API has no authentication: "+
			"anyone who reaches it could drain backends, move leadership or stop the node; "+
			"set admin.token_file (a bearer token) or admin.tls with client_ca_file (client certificates), "+
			"or admin.insecure: true to run it open on purpose")
	}
}

func (v *validator) validateCluster(c *Cluster) {
	v.peerAddr("cluster.raft_bind", c.RaftBind)
	v.peerAddr("cluster.gossip_bind", c.GossipBind)
	for i, j := range c.Join {
		v.peerAddr(fmt.Sprintf("cluster.join[%d]", i), j)
	}
	if c.DataDir == "" {
		v.bad("cluster.data_dir", "", "must not be empty: Raft keeps its log and state there (leave the key out for %s)", DefaultDataDir)
	}
	if !v.set["cluster.bootstrap_expect"] && len(c.Join) > 0 {
		v.bad("cluster.bootstrap_expect", "", "required when cluster.join is set: how many nodes form the first voter set")
	} else {
		v.atLeast("cluster.bootstrap_expect", c.BootstrapExpect, 1)
	}
	v.oneOf("cluster.role", c.Role, RoleVoter, RoleWitness)
	v.validateTiming(c.Timing)
	v.positive("cluster.reconnect_timeout", c.ReconnectTimeout)
	v.oneOf("cluster.rebalance", c.Rebalance, RebalanceManual, RebalanceAuto)
	v.validateClusterSecurity(c)
}

// validateTiming checks the resolved timing against hashicorp/raft's limits
// and docs/architecture.md rule 6 (lease < heartbeat <= election). A profile's values
// go through the same rules as the file's.
func (v *validator) validateTiming(t Timing) {
	if _, ok := timingProfiles[t.Profile]; t.Profile != "" && !ok {
		v.oneOf("cluster.timing", t.Profile, TimingProfiles()...)
		return
	}
	short := false
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"heartbeat", t.Heartbeat}, {"election", t.Election}, {"lease", t.Lease}} {
		if d.v < MinRaftTiming {
			v.bad("cluster.timing."+d.key, durationValue(d.v), "required, at least %s (a profile name sets all three)", MinRaftTiming)
			short = true
		}
	}
	switch {
	case short:
	case t.Lease >= t.Heartbeat:
		v.bad("cluster.timing.lease", t.Lease.String(), "must be shorter than heartbeat (%s): a cut-off leader must drop the VIP before a follower can win", t.Heartbeat)
	case t.Heartbeat > t.Election:
		v.bad("cluster.timing.heartbeat", t.Heartbeat.String(), "must not exceed election (%s)", t.Election)
	}
}

// durationValue is d as an error shows it: empty for a key left out.
func durationValue(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func (v *validator) validateVIPs(vips []VIP) {
	seen := map[netip.Addr]string{}
	for i, vip := range vips {
		path := fmt.Sprintf("vips[%d]", i)
		addr, err := netip.ParseAddr(vip.Address)
		switch {
		case vip.Address == "":
			v.bad(path+".address", "", "required")
		case err != nil:
			v.bad(path+".address", vip.Address, "not an IP address (write it without a prefix length)")
		case addr.Zone() != "":
			v.bad(path+".address", vip.Address, "must not have a zone")
		case addr.IsUnspecified(), addr.IsMulticast(), addr.IsLoopback(), addr.IsLinkLocalUnicast():
			v.bad(path+".address", vip.Address, "must be a unicast address, not loopback, link-local or unspecified")
		case seen[addr] != "":
			v.bad(path+".address", vip.Address, "already used by %s", seen[addr])
		default:
			seen[addr] = path
		}
		if vip.Interface == "" {
			v.bad(path+".interface", "", "required")
		} else if len(vip.Interface) > 15 || strings.ContainsAny(vip.Interface, "/ ") {
			v.bad(path+".interface", vip.Interface, "not an interface name")
		}
		if vip.Lifetime < MinVIPLifetime {
			v.bad(path+".lifetime", vip.Lifetime.String(), "must be at least %s: the kernel counts lifetimes in whole seconds", MinVIPLifetime)
		}
		v.positive(path+".refresh", vip.Refresh)
		if vip.Refresh > vip.Lifetime/2 {
			v.bad(path+".refresh", vip.Refresh.String(), "must be at most half the lifetime (%s), or the address expires between renewals", vip.Lifetime)
		}
		v.atLeast(path+".announce_count", vip.AnnounceCount, 1)
		v.positive(path+".announce_interval", vip.AnnounceInterval)
		v.validatePlacement(path, vip)
	}
}

// validatePlacement checks a VIP's placement and preferences.
func (v *validator) validatePlacement(path string, vip VIP) {
	switch vip.Placement {
	case PlacementLeader:
		if len(vip.Prefer) > 0 {
			v.bad(path+".prefer", strings.Join(vip.Prefer, ", "), "only used by placement: spread (a leader VIP is on the leader)")
		}
	case PlacementSpread:
	default:
		v.oneOf(path+".placement", vip.Placement, PlacementLeader, PlacementSpread)
	}
	seen := map[string]bool{}
	for j, name := range vip.Prefer {
		p := fmt.Sprintf("%s.prefer[%d]", path, j)
		switch {
		case name == "":
			v.bad(p, "", "empty node name")
		case seen[name]:
			v.bad(p, name, "node named twice")
		}
		seen[name] = true
	}
}

// uniqueName checks that name is set and not yet in seen, then adds it.
func (v *validator) uniqueName(path, name, kind string, seen map[string]bool) {
	switch {
	case name == "":
		v.bad(path, "", "required")
	case seen[name]:
		v.bad(path, name, "duplicate %s name", kind)
	}
	seen[name] = true
}

// validatePools checks the pools and returns their names.
func (v *validator) validatePools(pools []Pool) map[string]bool {
	names := map[string]bool{}
	for i, p := range pools {
		path := fmt.Sprintf("pools[%d]", i)
		v.uniqueName(path+".name", p.Name, "pool", names)
		v.oneOf(path+".algorithm", p.Algorithm, AlgorithmRoundRobin, AlgorithmLeastConn, AlgorithmRandom2, AlgorithmSourceHash)
		v.positive(path+".connect_timeout", p.ConnectTimeout)
		v.oneOf(path+".proxy_protocol", p.ProxyProtocol, "none", "v1", "v2")
		if len(p.Backends) == 0 {
			v.bad(path+".backends", "", "at least one backend is required")
		}
		addrs := map[string]bool{}
		for j, b := range p.Backends {
			bpath := fmt.Sprintf("%s.backends[%d]", path, j)
			v.hostPort(bpath+".address", b.Address)
			if addrs[b.Address] {
				v.bad(bpath+".address", b.Address, "duplicate backend in pool %q", p.Name)
			}
			addrs[b.Address] = true
			if b.Weight < 1 || b.Weight > 256 {
				v.bad(bpath+".weight", fmt.Sprint(b.Weight), "must be 1-256")
			}
		}
		v.validateHealth(path+".health", &p.Health)
	}
	return names
}

func (v *validator) validateHealth(path string, h *Health) {
	v.oneOf(path+".type", h.Type, CheckTCP, CheckHTTP, CheckHTTPS, CheckNone)
	if h.Type == CheckNone {
		if v.set[path+".initial"] {
			v.bad(path+".initial", h.Initial, "not used by type none: no check runs, so its backends always take connections; remove the key or choose a check type")
		}
		return
	}
	v.oneOf(path+".initial", h.Initial, InitialHealthy, InitialUnhealthy)
	v.positive(path+".interval", h.Interval)
	v.positive(path+".timeout", h.Timeout)
	if h.Timeout > h.Interval {
		v.bad(path+".timeout", h.Timeout.String(), "must not exceed interval (%s)", h.Interval)
	}
	if h.FastInterval > h.Interval {
		v.bad(path+".fast_interval", h.FastInterval.String(), "must not exceed interval (%s)", h.Interval)
	}
	v.atLeast(path+".rise", h.Rise, 1)
	v.atLeast(path+".fall", h.Fall, 1)
	if h.Type == CheckHTTP || h.Type == CheckHTTPS {
		if !strings.HasPrefix(h.Path, "/") {
			v.bad(path+".path", h.Path, "must start with /")
		}
	}
	if h.Type != CheckHTTPS {
		for _, key := range []struct{ name, value string }{
			{"ca_file", h.CAFile}, {"cert_file", h.CertFile}, {"key_file", h.KeyFile}, {"server_name", h.ServerName},
		} {
			if key.value != "" {
				v.bad(path+"."+key.name, key.value, "only used by type https")
			}
		}
		if h.TLSSkipVerify {
			v.bad(path+".tls_skip_verify", "true", "only used by type https")
		}
	}
	if (h.CertFile == "") != (h.KeyFile == "") {
		v.bad(path+".cert_file", h.CertFile, "cert_file and key_file go together")
	}
	for _, f := range []struct{ name, value string }{{"ca_file", h.CAFile}, {"cert_file", h.CertFile}, {"key_file", h.KeyFile}} {
		if f.value == "" {
			continue
		}
		if _, err := os.Stat(f.value); err != nil {
			v.bad(path+"."+f.name, f.value, "cannot read: %v", errors.Unwrap(err))
		}
	}
}

func (v *validator) validateFrontends(frontends []Frontend, pools map[string]bool) {
	names := map[string]bool{}
	listens := map[string]string{}
	for i, fe := range frontends {
		path := fmt.Sprintf("frontends[%d]", i)
		v.uniqueName(path+".name", fe.Name, "frontend", names)
		v.hostPort(path+".listen", fe.Listen)
		if other, ok := listens[fe.Listen]; ok && fe.Listen != "" {
			v.bad(path+".listen", fe.Listen, "already used by %s", other)
		}
		listens[fe.Listen] = path
		switch {
		case fe.Pool == "":
			v.bad(path+".pool", "", "required")
		case !pools[fe.Pool]:
			v.bad(path+".pool", fe.Pool, "no pool of that name")
		}
		v.atLeast(path+".max_connections", fe.MaxConnections, 1)
		v.positive(path+".idle_timeout", fe.IdleTimeout)
		v.atLeast(path+".max_connections_per_source", fe.MaxConnectionsPerSource, 0)
		if v.set[path+".accept_proxy"] {
			if len(fe.AcceptProxy.From) == 0 {
				v.bad(path+".accept_proxy.from", "", "required: the sources allowed to send a PROXY header")
			}
			v.positive(path+".accept_proxy.timeout", fe.AcceptProxy.Timeout)
		}
	}
}
