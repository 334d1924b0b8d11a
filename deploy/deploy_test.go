package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"go/ast"
	"go/token"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// metricDirs are the packages that export vipd's metrics.
var metricDirs = []string{"../balancer", "../health", "../election", "../vip", "../kube"}

// exportedMetrics scans metricDirs and fails if a package contributes no
// metric, which would mean the scan no longer understands the code.
func exportedMetrics(t *testing.T) map[string]metricKind {
	t.Helper()
	metrics, byDir, unresolved := scanMetrics(t, metricDirs...)
	for _, dir := range metricDirs {
		if len(byDir[dir]) == 0 {
			t.Fatalf("found no metric definition in %s: the scan no longer matches how metrics are defined there", dir)
		}
		t.Logf("%s defines %d metrics", dir, len(byDir[dir]))
	}
	for _, pos := range unresolved {
		t.Logf("metric name not resolvable statically at %s", pos)
	}
	return metrics
}

func TestEveryExampleConfigLoads(t *testing.T) {
	paths, err := filepath.Glob("examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no example configs in examples/")
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			cfg, err := config.Load(p)
			if err != nil {
				t.Fatalf("%v", err)
			}
			t.Logf("node %s (%s): %d vips, %d frontends, %d pools",
				cfg.Node.Name, cfg.Cluster.Role, len(cfg.VIPs), len(cfg.Frontends), len(cfg.Pools))
		})
	}
}

func TestWitnessExampleHoldsNothing(t *testing.T) {
	cfg, err := config.Load("examples/two-plus-witness.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Role != config.RoleWitness || len(cfg.VIPs)+len(cfg.Frontends)+len(cfg.Pools) != 0 {
		t.Errorf("witness example: role %q, %d vips, %d frontends, %d pools; want a witness with none",
			cfg.Cluster.Role, len(cfg.VIPs), len(cfg.Frontends), len(cfg.Pools))
	}
	node, err := config.Load("examples/two-plus-witness-node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(node.Cluster.Join, cfg.Cluster.Join) || node.Cluster.BootstrapExpect != cfg.Cluster.BootstrapExpect {
		t.Errorf("node and witness disagree: join %v / %v, bootstrap_expect %d / %d",
			node.Cluster.Join, cfg.Cluster.Join, node.Cluster.BootstrapExpect, cfg.Cluster.BootstrapExpect)
	}
}

type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile("prometheus/vipd-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("prometheus/vipd-rules.yaml: %v", err)
	}
	return rf
}

// TestAlertRulesPassPromtool runs Prometheus's own checker and the alert
// unit tests of deploy/prometheus: the rules parse, and each alert fires on
// the series it is meant for and stays quiet on a normal handover.
func TestAlertRulesPassPromtool(t *testing.T) {
	promtool := testenv.NeedProgram(t, "promtool", "evaluates the alert rules (sudo make test installs Debian's prometheus)")
	for _, args := range [][]string{
		{"check", "rules", "vipd-rules.yaml"},
		{"test", "rules", "vipd-rules_test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func TestRulesQueryOnlyExportedMetrics(t *testing.T) {
	metrics := exportedMetrics(t)
	rf := loadRules(t)
	records := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records[r.Record] = true
			}
		}
	}
	alerts, used := 0, map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Record + r.Alert
			switch {
			case (r.Record == "") == (r.Alert == ""):
				t.Errorf("group %s: a rule needs exactly one of record and alert (record %q, alert %q)", g.Name, r.Record, r.Alert)
			case strings.TrimSpace(r.Expr) == "":
				t.Errorf("%s: empty expr", name)
			case r.Alert != "":
				alerts++
				if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
					t.Errorf("alert %s: needs labels.severity and annotations.summary", name)
				}
				if r.For != "" {
					if _, err := time.ParseDuration(r.For); err != nil {
						t.Errorf("alert %s: for %q: %v", name, r.For, err)
					}
				}
			}
			series, recorded := referencedNames(r.Expr)
			for _, s := range series {
				used[s] = true
				if why := checkSeries(s, metrics); why != "" {
					t.Errorf("%s: %s", name, why)
				}
			}
			for _, rec := range recorded {
				if !records[rec] {
					t.Errorf("%s: uses %s, which no rule records", name, rec)
				}
			}
		}
	}
	if alerts == 0 {
		t.Error("no alerting rules")
	}
	t.Logf("%d rules, %d alerts, series used: %s", len(records)+alerts, alerts, strings.Join(slices.Sorted(maps.Keys(used)), " "))
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct{ X, Y, W, H int }
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

type dashboardFile struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashPanel `json:"panels"`
}

// grafanaVar matches $name and ${name} (with an optional :format).
var grafanaVar = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|\$([A-Za-z0-9_]+)`)

func TestDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	metrics := exportedMetrics(t)
	data, err := os.ReadFile("grafana/vipd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboardFile
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana/vipd-dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard needs a title, a uid and panels (title %q, uid %q, %d panels)", d.Title, d.UID, len(d.Panels))
	}

	vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	dsVar := ""
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "datasource" && string(v.Query) == `"prometheus"` {
			dsVar = v.Name
		}
	}
	if dsVar == "" {
		t.Fatal("no Prometheus datasource variable in templating")
	}
	wantDS := "${" + dsVar + "}"
	checkDS := func(where string, ds *datasourceRef) {
		if ds == nil || ds.UID != wantDS {
			t.Errorf("%s: datasource %+v, want uid %s", where, ds, wantDS)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			checkDS("variable "+v.Name, v.Datasource)
		}
	}

	ids := map[int]string{}
	var cells [][24]string // grid cells taken, by row
	for _, p := range d.Panels {
		where := "panel " + strconv.Quote(p.Title)
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("%s: id %d already used by %q", where, p.ID, prev)
		}
		ids[p.ID] = p.Title
		checkDS(where, p.Datasource)
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", where, g)
			continue
		}
		overlaps := map[string]bool{}
		for y := g.Y; y < g.Y+g.H; y++ {
			for len(cells) <= y {
				cells = append(cells, [24]string{})
			}
			for x := g.X; x < g.X+g.W; x++ {
				if other := cells[y][x]; other != "" && !overlaps[other] {
					overlaps[other] = true
					t.Errorf("%s overlaps panel %q from column %d, row %d", where, other, x, y)
				}
				cells[y][x] = p.Title
			}
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		for _, tg := range p.Targets {
			checkDS(where+" query "+tg.RefID, tg.Datasource)
			series, recorded := referencedNames(tg.Expr)
			if len(series) == 0 || len(recorded) > 0 {
				t.Errorf("%s query %s: want raw vipd_ series only (the dashboard must work without the rules): %s", where, tg.RefID, tg.Expr)
			}
			for _, s := range series {
				if why := checkSeries(s, metrics); why != "" {
					t.Errorf("%s: %s", where, why)
				}
			}
			for _, m := range grafanaVar.FindAllStringSubmatch(tg.Expr, -1) {
				if name := m[1] + m[2]; !vars[name] {
					t.Errorf("%s query %s: variable $%s is not defined", where, tg.RefID, name)
				}
			}
		}
	}
}

// leaveTimeout reads cmd/vipd's bound on the leadership hand-over at
// shutdown, which comes before the drain of shutdown_grace.
func leaveTimeout(t *testing.T) time.Duration {
	t.Helper()
	_, files := parsePackage(t, "../cmd/vipd")
	e, ok := packageConsts(files)["leaveTimeout"]
	if !ok {
		t.Fatal("no const leaveTimeout in cmd/vipd: update this test to the daemon's shutdown sequence")
	}
	units := map[string]time.Duration{"Millisecond": time.Millisecond, "Second": time.Second, "Minute": time.Minute}
	// The form N * time.Unit.
	if be, ok := e.(*ast.BinaryExpr); ok && be.Op == token.MUL {
		lit, ok1 := be.X.(*ast.BasicLit)
		sel, ok2 := be.Y.(*ast.SelectorExpr)
		if ok1 && ok2 && lit.Kind == token.INT && units[sel.Sel.Name] > 0 {
			if n, err := strconv.Atoi(lit.Value); err == nil {
				return time.Duration(n) * units[sel.Sel.Name]
			}
		}
	}
	t.Fatal("cmd/vipd: leaveTimeout is not of the form N * time.Unit; update this test")
	return 0
}

// closeMargin is the time after the drain: closing the admin server (cmd/vipd
// waits up to 2s for calls in flight) and stopping Raft and gossip.
const closeMargin = 5 * time.Second

// maxShutdownGrace is the longest node.shutdown_grace of the examples.
func maxShutdownGrace(t *testing.T) time.Duration {
	t.Helper()
	paths, _ := filepath.Glob("examples/*.yaml")
	var longest time.Duration
	for _, p := range paths {
		cfg, err := config.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		longest = max(longest, cfg.Node.ShutdownGrace)
	}
	return longest
}

// unitFile reads the [Service] and [Unit] keys of a systemd unit; repeated
// keys keep every value.
func unitFile(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not key=value: %q", path, line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestSystemdUnitOutlastsShutdown(t *testing.T) {
	u := unitFile(t, "systemd/vipd.service")
	one := func(key string) string {
		if v := u["Service."+key]; len(v) == 1 {
			return v[0]
		}
		t.Errorf("Service.%s: want exactly one value, have %q", key, u["Service."+key])
		return ""
	}
	const cfgArg = "--config /etc/vipd/vipd.yaml"
	if start := one("ExecStart"); !strings.Contains(start, cfgArg) || strings.Contains(start, "--check") {
		t.Errorf("ExecStart = %q: want the daemon with %s", start, cfgArg)
	}
	if pre := one("ExecStartPre"); !strings.Contains(pre, "--check") || !strings.Contains(pre, cfgArg) {
		t.Errorf("ExecStartPre = %q: want --check %s", pre, cfgArg)
	}
	for key, want := range map[string]string{"Type": "notify", "NotifyAccess": "main", "Restart": "always", "KillSignal": "SIGTERM", "StateDirectory": "vipd", "NoNewPrivileges": "yes"} {
		if got := one(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	caps := strings.Fields(one("CapabilityBoundingSet"))
	slices.Sort(caps)
	if want := []string{"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}; !slices.Equal(caps, want) {
		t.Errorf("CapabilityBoundingSet = %v, want %v", caps, want)
	}

	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v (write it as a Go duration such as 30s)", err)
	}
	need := maxShutdownGrace(t) + leaveTimeout(t) + closeMargin
	if stop < need {
		t.Errorf("TimeoutStopSec %s does not outlast the hand-over, the drain and the close (%s): systemd would SIGKILL mid-way", stop, need)
	}
	t.Logf("TimeoutStopSec %s, shutdown needs at most %s", stop, need)
	// The daemon pings every second at most (min(1s, WatchdogSec/2)): a
	// WatchdogSec of a few seconds leaves room for a slow tick.
	if wd, err := time.ParseDuration(one("WatchdogSec")); err != nil || wd < 4*time.Second {
		t.Errorf("WatchdogSec = %q (%v): want a Go duration of 4s or more", one("WatchdogSec"), err)
	}
}

// staticPod is the part of the manifest the daemon depends on.
type staticPod struct {
	Spec struct {
		HostNetwork                   bool   `yaml:"hostNetwork"`
		PriorityClassName             string `yaml:"priorityClassName"`
		TerminationGracePeriodSeconds int    `yaml:"terminationGracePeriodSeconds"`
		Containers                    []struct {
			Image           string   `yaml:"image"`
			Command         []string `yaml:"command"`
			SecurityContext struct {
				Privileged   *bool `yaml:"privileged"`
				RunAsUser    *int  `yaml:"runAsUser"`
				Capabilities struct {
					Add  []string `yaml:"add"`
					Drop []string `yaml:"drop"`
				} `yaml:"capabilities"`
			} `yaml:"securityContext"`
			LivenessProbe  probe `yaml:"livenessProbe"`
			ReadinessProbe probe `yaml:"readinessProbe"`
			VolumeMounts   []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
			} `yaml:"volumeMounts"`
		} `yaml:"containers"`
		Volumes []struct {
			Name     string `yaml:"name"`
			HostPath struct {
				Path string `yaml:"path"`
			} `yaml:"hostPath"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
}

func loadStaticPod(t *testing.T) staticPod {
	t.Helper()
	data, err := os.ReadFile("kubernetes/vipd-static-pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pod staticPod
	if err := yaml.Unmarshal(data, &pod); err != nil {
		t.Fatalf("kubernetes/vipd-static-pod.yaml: %v", err)
	}
	return pod
}

func TestStaticPodMatchesControlPlaneExample(t *testing.T) {
	pod := loadStaticPod(t)
	cfg, err := config.Load("examples/control-plane.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := pod.Spec
	if !s.HostNetwork || s.PriorityClassName != "system-node-critical" || len(s.Containers) != 1 {
		t.Fatalf("want hostNetwork, system-node-critical and one container; have %v, %q, %d", s.HostNetwork, s.PriorityClassName, len(s.Containers))
	}
	c := s.Containers[0]
	if sc := c.SecurityContext; sc.Privileged == nil || *sc.Privileged {
		t.Error("securityContext.privileged must be set to false")
	}
	add := slices.Sorted(slices.Values(c.SecurityContext.Capabilities.Add))
	if !slices.Equal(add, []string{"NET_ADMIN", "NET_RAW"}) || !slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") {
		t.Errorf("capabilities add %v drop %v: want add exactly NET_ADMIN NET_RAW, drop ALL", add, c.SecurityContext.Capabilities.Drop)
	}
	if !strings.Contains(strings.Join(c.Command, " "), "--config /etc/vipd/vipd.yaml") {
		t.Errorf("command %q does not read /etc/vipd/vipd.yaml", c.Command)
	}

	_, port, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]struct {
		probe
		path string
	}{"liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
		if p.HTTPGet.Path != p.path || strconv.Itoa(p.HTTPGet.Port) != port {
			t.Errorf("%s probe GET %s on port %d; want %s on the admin port %s of control-plane.yaml", name, p.HTTPGet.Path, p.HTTPGet.Port, p.path, port)
		}
	}

	hostPaths := map[string]string{}
	for _, v := range s.Volumes {
		hostPaths[v.Name] = v.HostPath.Path
	}
	mounted := map[string]string{} // container path -> host path
	for _, m := range c.VolumeMounts {
		mounted[m.MountPath] = hostPaths[m.Name]
	}
	for _, want := range []string{"/etc/vipd", cfg.Cluster.DataDir} {
		if mounted[want] != want {
			t.Errorf("%s: mounted from host path %q, want the host's %s", want, mounted[want], want)
		}
	}

	grace := time.Duration(s.TerminationGracePeriodSeconds) * time.Second
	if need := cfg.Node.ShutdownGrace + leaveTimeout(t) + closeMargin; grace < need {
		t.Errorf("terminationGracePeriodSeconds %s does not outlast the hand-over, the drain and the close (%s)", grace, need)
	}
}
