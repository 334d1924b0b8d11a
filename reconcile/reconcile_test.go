package reconcile

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vipd/vipd/config"
)

type fakeSource struct {
	cfg *config.Config
	err error
}

func (s *fakeSource) Desired() (*config.Config, error) { return s.cfg, s.err }

type fakeTarget struct {
	applied []*config.Config
	err     error
}

func (t *fakeTarget) Apply(_, next *config.Config) error {
	if t.err != nil {
		return t.err
	}
	t.applied = append(t.applied, next)
	return nil
}

func parse(t *testing.T, doc string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const base = "pools: [{name: web, backends: [{address: 198.18.0.21:9000}]}]\n"

func newTest(t *testing.T) (*Reconciler, *fakeSource, *fakeTarget, *prometheus.Registry, *[]*config.Config) {
	t.Helper()
	src, tgt, reg := &fakeSource{}, &fakeTarget{}, prometheus.NewRegistry()
	var seen []*config.Config
	r := New(Options{Running: parse(t, base), Source: src, Target: tgt, Registerer: reg,
		OnApplied: func(c *config.Config) { seen = append(seen, c) }})
	return r, src, tgt, reg, &seen
}

func TestReloadAppliesAChangedConfigAndOwnsIt(t *testing.T) {
	r, src, tgt, _, seen := newTest(t)
	before := config.Digest(r.Running())
	src.cfg = parse(t, "pools: [{name: web, backends: [{address: 198.18.0.22:9000}]}]\n")
	res := r.Reload()
	if res.Result != Applied || len(tgt.applied) != 1 || r.Running() != src.cfg || len(*seen) != 1 {
		t.Fatalf("result %+v, applied %d, running is next %v, OnApplied %d", res, len(tgt.applied), r.Running() == src.cfg, len(*seen))
	}
	if res.ConfigDigest == before || res.ConfigDigest != config.Digest(src.cfg) {
		t.Errorf("digest %s after the reload, %s before", res.ConfigDigest, before)
	}
	src.cfg = parse(t, "pools: [{name: web, backends: [{address: 198.18.0.22:9000}]}]\n")
	if res := r.Reload(); res.Result != Unchanged || len(tgt.applied) != 1 {
		t.Errorf("the same config again: %+v, applied %d", res, len(tgt.applied))
	}
}

func TestReloadThatCannotApplyChangesNothing(t *testing.T) {
	r, src, tgt, reg, seen := newTest(t)
	running := r.Running()
	for _, c := range []struct {
		name   string
		set    func()
		want   Outcome
		inErr  string
		reload float64
	}{
		{"invalid", func() { src.cfg, src.err = nil, errors.New("line 3: pools[0].algorithm: bogus") }, Invalid, "line 3", 1},
		{"restart-only", func() {
			src.err = nil
			src.cfg = parse(t, "cluster: {raft_bind: 127.0.0.1:7100}\npools: [{name: web, backends: [{address: 198.18.0.22:9000}]}]\n")
		}, Refused, "cluster.raft_bind", 1},
		{"target fails", func() {
			src.cfg = parse(t, "pools: [{name: web, backends: [{address: 198.18.0.22:9000}]}]\n")
			tgt.err = errors.New("bind 198.18.0.100:80: address in use")
		}, Failed, "address in use", 1},
	} {
		c.set()
		res := r.Reload()
		if res.Result != c.want || !strings.Contains(res.Error, c.inErr) {
			t.Errorf("%s: %+v, want %s naming %q", c.name, res, c.want, c.inErr)
		}
		if r.Running() != running || len(tgt.applied) != 0 || len(*seen) != 0 {
			t.Errorf("%s: something changed: running replaced %v, applied %d", c.name, r.Running() != running, len(tgt.applied))
		}
		if got := testutil.ToFloat64(r.reloads.WithLabelValues(string(c.want))); got != c.reload {
			t.Errorf("%s: reloads{result=%s} = %v", c.name, c.want, got)
		}
		if c.want == Refused {
			if got := testutil.ToFloat64(r.pending); got != 1 {
				t.Errorf("restart pending %v after a refused reload", got)
			}
		}
	}
	if n, err := testutil.GatherAndCount(reg, "vipd_config_reloads_total"); err != nil || n != 5 {
		t.Errorf("reloads series: %d, %v", n, err)
	}
}

func TestFileSourceWithoutAFileSaysSo(t *testing.T) {
	if _, err := (File{}).Desired(); !errors.Is(err, ErrNoFile) {
		t.Errorf("no file: %v", err)
	}
}

// countingSource is a file source that counts its reads.
type countingSource struct {
	cfg   *config.Config
	err   error
	reads int
}

func (s *countingSource) Desired() (*config.Config, error) { s.reads++; return s.cfg, s.err }

// servedTest is a Reconciler with Options.Served: served is what it adds.
type servedTest struct {
	r      *Reconciler
	src    *countingSource
	tgt    *fakeTarget
	served config.Served
	seen   []*config.Config
}

func newServedTest(t *testing.T) *servedTest {
	t.Helper()
	st := &servedTest{src: &countingSource{}, tgt: &fakeTarget{}}
	st.r = New(Options{Running: parse(t, base), Source: st.src, Target: st.tgt,
		Served:    func() config.Served { return st.served },
		OnApplied: func(c *config.Config) { st.seen = append(st.seen, c) }})
	return st
}

// service is what the Kubernetes mode serves for one Service.
func service(name, vip string, backends ...string) config.Served {
	return config.Served{
		VIPs:      []config.VIP{config.ServedVIP(vip, "eth0")},
		Frontends: []config.Frontend{config.ServedFrontend(name, vip+":80", name)},
		Pools:     []config.Pool{config.ServedPool(name, backends)},
	}
}

// poolNames are the names of c's pools, in order.
func poolNames(c *config.Config) []string {
	var out []string
	for _, p := range c.Pools {
		out = append(out, p.Name)
	}
	return out
}

// backendsOf are the backend addresses of c's pool name.
func backendsOf(c *config.Config, name string) []string {
	var out []string
	for _, p := range c.Pools {
		if p.Name == name {
			for _, b := range p.Backends {
				out = append(out, b.Address)
			}
		}
	}
	return out
}

func TestReloadReadsTheFileAndAddsWhatIsServed(t *testing.T) {
	st := newServedTest(t)
	st.src.cfg = parse(t, "pools: [{name: web, backends: [{address: 198.18.0.22:9000}]}]\n")
	st.served = service("default/svc", "198.18.0.201", "10.0.0.1:8080")
	res := st.r.Reload()
	if res.Result != Applied || st.src.reads != 1 || len(st.tgt.applied) != 1 || len(st.seen) != 1 {
		t.Fatalf("result %+v, reads %d, applied %d, OnApplied %d", res, st.src.reads, len(st.tgt.applied), len(st.seen))
	}
	running := st.r.Running()
	if running != st.tgt.applied[0] || running != st.seen[0] {
		t.Fatal("the running config is not the one applied")
	}
	if got := poolNames(running); !slices.Equal(got, []string{"web", "default/svc"}) {
		t.Errorf("pools %q, want the file's then the served", got)
	}
	if got := backendsOf(running, "web"); !slices.Equal(got, []string{"198.18.0.22:9000"}) {
		t.Errorf("web backends %q: the file was not re-read", got)
	}
	if len(running.VIPs) != 1 || len(running.Frontends) != 1 || !running.Pools[1].Served {
		t.Errorf("served entries missing: vips %+v, frontends %+v", running.VIPs, running.Frontends)
	}
	if res.ConfigDigest != config.Digest(running) {
		t.Errorf("digest %s, running %s", res.ConfigDigest, config.Digest(running))
	}
	if len(st.src.cfg.Pools) != 1 {
		t.Error("the merge changed the source's config")
	}
}

// A Resync (a Service changed) applies the file's state as it runs with
// what is served now: the file, changed or broken on disk, is not read.
func TestResyncKeepsTheRunningFileAndAppliesTheNewServed(t *testing.T) {
	st := newServedTest(t)
	st.src.cfg = parse(t, "pools: [{name: web, backends: [{address: 198.18.0.22:9000}]}]\n")
	st.served = service("default/a", "198.18.0.201", "10.0.0.1:8080")
	if res := st.r.Reload(); res.Result != Applied {
		t.Fatalf("reload: %+v", res)
	}

	// The file on disk changes (not reloaded), then breaks; a Service changes.
	st.src.cfg = parse(t, "pools: [{name: web, backends: [{address: 198.18.0.99:9000}]}]\n")
	st.served = service("default/a", "198.18.0.201", "10.0.0.1:8080", "10.0.0.2:8080")
	res := st.r.Resync()
	if res.Result != Applied || st.src.reads != 1 {
		t.Fatalf("resync: %+v, source read %d times, want once (by the reload)", res, st.src.reads)
	}
	running := st.r.Running()
	if got := backendsOf(running, "web"); !slices.Equal(got, []string{"198.18.0.22:9000"}) {
		t.Errorf("web backends %q after a resync: want the running file's 198.18.0.22:9000", got)
	}
	if got := backendsOf(running, "default/a"); !slices.Equal(got, []string{"10.0.0.1:8080", "10.0.0.2:8080"}) {
		t.Errorf("served backends %q: the new Served was not applied", got)
	}
	if len(st.tgt.applied) != 2 || st.tgt.applied[1] != running {
		t.Errorf("applied %d configs, want 2", len(st.tgt.applied))
	}

	st.src.cfg, st.src.err = nil, errors.New("line 1: not valid YAML")
	st.served = config.Served{} // the Service is gone
	if res := st.r.Resync(); res.Result != Applied || st.src.reads != 1 {
		t.Fatalf("resync with a broken file on disk: %+v, reads %d", res, st.src.reads)
	}
	if got := poolNames(st.r.Running()); !slices.Equal(got, []string{"web"}) {
		t.Errorf("pools %q once the Service is gone, want the file's only", got)
	}
	if got := backendsOf(st.r.Running(), "web"); !slices.Equal(got, []string{"198.18.0.22:9000"}) {
		t.Errorf("web backends %q", got)
	}
}

func TestResyncWithTheSameServedIsUnchanged(t *testing.T) {
	st := newServedTest(t)
	if res := st.r.Resync(); res.Result != Unchanged || len(st.tgt.applied) != 0 {
		t.Fatalf("first resync, nothing served: %+v, applied %d", res, len(st.tgt.applied))
	}
	st.served = service("default/a", "198.18.0.201", "10.0.0.1:8080")
	if res := st.r.Resync(); res.Result != Applied {
		t.Fatalf("resync: %+v", res)
	}
	running := st.r.Running()
	st.served = service("default/a", "198.18.0.201", "10.0.0.1:8080") // equal, freshly built
	res := st.r.Resync()
	if res.Result != Unchanged || len(st.tgt.applied) != 1 || len(st.seen) != 1 || st.r.Running() != running {
		t.Errorf("the same Served again: %+v, applied %d, running replaced %v", res, len(st.tgt.applied), st.r.Running() != running)
	}
	if got := testutil.ToFloat64(st.r.reloads.WithLabelValues(string(Unchanged))); got != 2 {
		t.Errorf("reloads{result=unchanged} = %v, want 2", got)
	}
}

// Served entries that clash with the file's make the merged config
// invalid: nothing changes, at a resync and at a reload.
func TestServedThatClashesWithTheFileChangesNothing(t *testing.T) {
	st := newServedTest(t)
	st.served = service("default/a", "198.18.0.201", "10.0.0.1:8080")
	if res := st.r.Resync(); res.Result != Applied {
		t.Fatalf("resync: %+v", res)
	}
	running := st.r.Running()
	for _, c := range []struct {
		name   string
		served config.Served
		inErr  string
	}{
		{"the file's pool name", config.Served{Pools: []config.Pool{config.ServedPool("web", []string{"10.0.0.1:8080"})}}, "duplicate pool name"},
		{"a frontend without its pool", config.Served{Frontends: []config.Frontend{config.ServedFrontend("default/b", "198.18.0.202:80", "default/b")}}, "no pool of that name"},
	} {
		st.served = c.served
		for _, do := range []struct {
			what string
			call func() Result
		}{{"resync", st.r.Resync}, {"reload", st.r.Reload}} {
			st.src.cfg = parse(t, base)
			res := do.call()
			if res.Result != Invalid || !strings.Contains(res.Error, c.inErr) {
				t.Errorf("%s, %s: %+v, want invalid naming %q", c.name, do.what, res, c.inErr)
			}
			if st.r.Running() != running || len(st.tgt.applied) != 1 || len(st.seen) != 1 {
				t.Errorf("%s, %s: something changed: running replaced %v, applied %d", c.name, do.what, st.r.Running() != running, len(st.tgt.applied))
			}
			if res.ConfigDigest != config.Digest(running) {
				t.Errorf("%s, %s: digest %s, want the running %s", c.name, do.what, res.ConfigDigest, config.Digest(running))
			}
		}
	}
	if got := testutil.ToFloat64(st.r.reloads.WithLabelValues(string(Invalid))); got != 4 {
		t.Errorf("reloads{result=invalid} = %v, want 4", got)
	}
}

// A Reload that applied a changed file makes it the file later resyncs
// use; one that did not apply leaves the old file in place.
func TestResyncUsesTheFileOfTheLastAppliedReload(t *testing.T) {
	st := newServedTest(t)
	st.src.cfg = parse(t, "pools: [{name: web, backends: [{address: 198.18.0.22:9000}]}]\n")
	if res := st.r.Reload(); res.Result != Applied {
		t.Fatalf("reload: %+v", res)
	}
	st.src.cfg = parse(t, "pools: [{name: web, backends: [{address: 198.18.0.33:9000}]}]\n") // on disk, not reloaded
	st.served = service("default/a", "198.18.0.201", "10.0.0.1:8080")
	if res := st.r.Resync(); res.Result != Applied {
		t.Fatalf("resync: %+v", res)
	}
	if got := backendsOf(st.r.Running(), "web"); !slices.Equal(got, []string{"198.18.0.22:9000"}) {
		t.Errorf("web backends %q after the resync, want the reloaded file's 198.18.0.22:9000", got)
	}

	// A reload the target cannot apply: the running file stays.
	st.tgt.err = errors.New("bind: address in use")
	if res := st.r.Reload(); res.Result != Failed {
		t.Fatalf("failing reload: %+v", res)
	}
	st.tgt.err = nil
	st.served = service("default/a", "198.18.0.201", "10.0.0.9:8080")
	if res := st.r.Resync(); res.Result != Applied {
		t.Fatalf("resync after a failed reload: %+v", res)
	}
	if got := backendsOf(st.r.Running(), "web"); !slices.Equal(got, []string{"198.18.0.22:9000"}) {
		t.Errorf("web backends %q: a resync took the file of a reload that failed", got)
	}

	// Now it applies; the next resync keeps it.
	if res := st.r.Reload(); res.Result != Applied {
		t.Fatalf("reload: %+v", res)
	}
	st.src.cfg = parse(t, base)
	st.served = service("default/a", "198.18.0.201", "10.0.0.10:8080")
	if res := st.r.Resync(); res.Result != Applied {
		t.Fatalf("resync: %+v", res)
	}
	running := st.r.Running()
	if got := backendsOf(running, "web"); !slices.Equal(got, []string{"198.18.0.33:9000"}) {
		t.Errorf("web backends %q, want the last reloaded file's 198.18.0.33:9000", got)
	}
	if got := backendsOf(running, "default/a"); !slices.Equal(got, []string{"10.0.0.10:8080"}) {
		t.Errorf("served backends %q", got)
	}
}
