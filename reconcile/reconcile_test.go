package reconcile

import (
	"errors"
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
