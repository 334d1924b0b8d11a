package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// docTable is one table of docs/configuration.md: the heading it sits
// under, its header cells and its rows (cells with backticks kept).
type docTable struct {
	heading string
	header  []string
	rows    [][]string
}

// readDocTables parses the Markdown tables of docs/configuration.md.
func readDocTables(t *testing.T) []docTable {
	t.Helper()
	data, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var tables []docTable
	heading := ""
	var cur *docTable
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
		}
		if !strings.HasPrefix(line, "|") {
			cur = nil
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case cur == nil:
			tables = append(tables, docTable{heading: heading, header: cells})
			cur = &tables[len(tables)-1]
		case strings.HasPrefix(cells[0], "---"):
		default:
			cur.rows = append(cur.rows, cells)
		}
	}
	return tables
}

var codeSpan = regexp.MustCompile("`([^`]*)`")

// spans returns the `code` spans of a cell: the literal values it names.
func spans(cell string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// documentedDefaults maps each key path of the key/default tables (written
// "pools.health.interval": list indexes left out) to the literal values of
// its default cell. Keys whose default is prose ("hostname", "required")
// have none and are left out.
func documentedDefaults(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, tb := range readDocTables(t) {
		if len(tb.header) < 2 || tb.header[0] != "key" || tb.header[1] != "default" {
			continue
		}
		prefix := strings.ReplaceAll(tb.heading, "[]", "") + "."
		for _, row := range tb.rows {
			key := strings.ReplaceAll(row[0], "`", "")
			if !strings.HasPrefix(tb.heading, "admin") { // "admin.listen" under "admin, log" is whole
				key = prefix + key
			}
			if vals := spans(row[1]); len(vals) > 0 {
				out[key] = vals
			}
		}
	}
	return out
}

// The defaults a file gets for the keys it leaves out are the ones
// docs/configuration.md documents: every literal default in its tables is
// compared with what Parse gives, so code and docs cannot drift apart.
func TestLoadedDefaultsAreTheDocumentedOnes(t *testing.T) {
	cfg, err := Parse([]byte(`
vips: [{address: 198.18.0.100, interface: eth0}]
frontends: [{name: web, listen: 127.0.0.1:8080, pool: api, accept_proxy: {from: [198.18.0.0/24]}}]
pools:
  - {name: api, backends: [{address: 127.0.0.1:9000}], health: {type: http}}
  - {name: tcp, backends: [{address: 127.0.0.1:9001}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	vip, fe, api, tcp := cfg.VIPs[0], cfg.Frontends[0], cfg.Pools[0], cfg.Pools[1]
	var statuses []string
	for _, r := range api.Health.ExpectStatus {
		statuses = append(statuses, fmt.Sprintf("%q", r.String()))
	}
	loaded := map[string][]any{
		"node.shutdown_grace":                  {cfg.Node.ShutdownGrace},
		"cluster.raft_bind":                    {cfg.Cluster.RaftBind},
		"cluster.gossip_bind":                  {cfg.Cluster.GossipBind},
		"cluster.join":                         {fmt.Sprintf("[%s]", strings.Join(cfg.Cluster.Join, ", "))},
		"cluster.bootstrap_expect":             {cfg.Cluster.BootstrapExpect},
		"cluster.data_dir":                     {cfg.Cluster.DataDir},
		"cluster.role":                         {cfg.Cluster.Role},
		"cluster.timing":                       {cfg.Cluster.Timing.Profile},
		"cluster.fitness_grace":                {cfg.Cluster.FitnessGrace},
		"cluster.reconnect_timeout":            {cfg.Cluster.ReconnectTimeout},
		"cluster.rebalance":                    {cfg.Cluster.Rebalance},
		"vips.placement":                       {vip.Placement},
		"vips.lifetime":                        {vip.Lifetime},
		"vips.refresh":                         {vip.Refresh},
		"vips.announce_count":                  {vip.AnnounceCount},
		"vips.announce_interval":               {vip.AnnounceInterval},
		"frontends.max_connections":            {fe.MaxConnections},
		"frontends.idle_timeout":               {fe.IdleTimeout},
		"pools.algorithm":                      {api.Algorithm},
		"pools.connect_timeout":                {api.ConnectTimeout},
		"pools.proxy_protocol":                 {api.ProxyProtocol},
		"pools.slow_start":                     {api.SlowStart},
		"pools.health.type":                    {tcp.Health.Type},
		"pools.health.path":                    {api.Health.Path},
		"pools.health.expect_status":           {"[" + strings.Join(statuses, ", ") + "]"},
		"pools.health.tls_skip_verify":         {api.Health.TLSSkipVerify},
		"pools.health.interval":                {api.Health.Interval},
		"pools.health.timeout":                 {api.Health.Timeout},
		"pools.health.rise / fall":             {api.Health.Rise, api.Health.Fall},
		"pools.health.initial":                 {tcp.Health.Initial},
		"admin.listen":                         {cfg.Admin.Listen},
		"admin.insecure":                       {cfg.Admin.Insecure},
		"log.level":                            {cfg.Log.Level},
		"log.format":                           {cfg.Log.Format},
		"frontends.max_connections_per_source": {fe.MaxConnectionsPerSource},
		"frontends.accept_proxy.timeout":       {fe.AcceptProxy.Timeout},
	}
	documented := documentedDefaults(t)
	for key, want := range documented {
		got, ok := loaded[key]
		if !ok {
			t.Errorf("%s: documented default %q is not checked here", key, want)
			continue
		}
		if len(got) > len(want) {
			t.Errorf("%s: documented default %q has fewer values than the %d loaded", key, want, len(got))
			continue
		}
		for i, g := range got {
			if !sameValue(g, want[i]) {
				t.Errorf("%s: loaded %v, documented %q", key, g, want[i])
			}
		}
	}
	for key := range loaded {
		if _, ok := documented[key]; !ok {
			t.Errorf("%s: loaded default not in docs/configuration.md", key)
		}
	}
	// Defaults the docs give in words.
	if h := api.Health; h.FastInterval != h.Interval/2 {
		t.Errorf("fast_interval %s, documented as interval / 2 (%s)", h.FastInterval, h.Interval/2)
	}
	if host, _ := os.Hostname(); cfg.Node.Name != host {
		t.Errorf("node.name %q, documented as the hostname %q", cfg.Node.Name, host)
	}
	if api.Backends[0].Weight != 1 || api.Health.Host != "" {
		t.Errorf("weight %d, host %q: documented as 1 and the backend address", api.Backends[0].Weight, api.Health.Host)
	}
}

// sameValue compares a loaded value with the text the docs give for it;
// durations compare as durations (`1h` is 1h0m0s).
func sameValue(got any, doc string) bool {
	if d, ok := got.(time.Duration); ok {
		want, err := time.ParseDuration(doc)
		return err == nil && d == want
	}
	return fmt.Sprint(got) == doc
}

// The lan and wan profiles resolve, at load, to the durations
// docs/configuration.md lists, and the election gets exactly those.
func TestTimingProfilesResolveToTheDocumentedDurations(t *testing.T) {
	var profiles *docTable
	for _, tb := range readDocTables(t) {
		if len(tb.header) == 5 && tb.header[0] == "profile" {
			profiles = &tb
		}
	}
	if profiles == nil || len(profiles.rows) != len(timingProfiles) {
		t.Fatalf("docs/configuration.md: timing profile table %+v, want one row per profile (%d)", profiles, len(timingProfiles))
	}
	for _, row := range profiles.rows {
		name := strings.Trim(row[0], "`")
		var want Timing
		for i, d := range []*time.Duration{&want.Heartbeat, &want.Election, &want.Lease} {
			var err error
			if *d, err = time.ParseDuration(strings.Trim(row[i+1], "`")); err != nil {
				t.Fatalf("profile %s: %v", name, err)
			}
		}
		want.Profile = name
		switch row[4] {
		case "yes":
			want.WatchLeader = true
		case "no":
		default:
			t.Fatalf("profile %s: leader watch %q, want yes or no", name, row[4])
		}
		cfg, err := Parse([]byte("cluster: {timing: " + name + "}\n"))
		if err != nil {
			t.Fatalf("profile %s: %v", name, err)
		}
		if cfg.Cluster.Timing != want {
			t.Errorf("profile %s resolved to %+v, documented %+v", name, cfg.Cluster.Timing, want)
		}
	}
	if cfg, err := Parse(nil); err != nil || cfg.Cluster.Timing != timingProfiles[TimingLAN] {
		t.Errorf("default timing %+v (%v), want the lan profile", cfg.Cluster.Timing, err)
	}
}

// TestTimingProfilesKeepLeaseBelowHeartbeat holds every profile to
// docs/architecture.md rule 6 with raft's slack: raft checks the leader
// lease at least 10 ms apart, so a cut-off leader may step down up to lease
// + 10 ms after its last contact, which must come before the earliest
// moment a follower may campaign (one heartbeat timeout).
func TestTimingProfilesKeepLeaseBelowHeartbeat(t *testing.T) {
	const raftLeaseCheckInterval = 10 * time.Millisecond
	for _, name := range TimingProfiles() {
		p, _ := TimingProfile(name)
		if p.Lease+raftLeaseCheckInterval >= p.Heartbeat {
			t.Errorf("profile %s: lease %s + %s is not below heartbeat %s", name, p.Lease, raftLeaseCheckInterval, p.Heartbeat)
		}
		if p.Heartbeat > p.Election {
			t.Errorf("profile %s: heartbeat %s above election %s", name, p.Heartbeat, p.Election)
		}
	}
	if len(TimingProfiles()) != len(timingProfiles) {
		t.Fatalf("TimingProfiles() = %v, want every profile of the table", TimingProfiles())
	}
}
