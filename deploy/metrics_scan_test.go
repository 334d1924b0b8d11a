package deploy

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// metricKind tells which series names a metric family exposes.
type metricKind int

const (
	kindPlain     metricKind = iota // counter or gauge: the name itself
	kindHistogram                   // name_bucket, name_sum, name_count
	kindSummary                     // name, name_sum, name_count
)

func (k metricKind) String() string {
	return [...]string{"counter/gauge", "histogram", "summary"}[k]
}

const promPkg = "github.com/prometheus/client_golang/prometheus"

// scanMetrics reads the non-test Go files of each package directory and
// returns every metric family they define, by full name: the
// Namespace/Subsystem/Name of prometheus.*Opts literals and the name given
// to prometheus.NewDesc. Names are string literals, constants of the
// package, concatenations of those or prometheus.BuildFQName calls. Names it
// cannot resolve are returned in unresolved (as file:line).
func scanMetrics(t *testing.T, dirs ...string) (metrics map[string]metricKind, byDir map[string][]string, unresolved []string) {
	t.Helper()
	metrics, byDir = map[string]metricKind{}, map[string][]string{}
	for _, dir := range dirs {
		fset, files := parsePackage(t, dir)
		s := &scanner{fset: fset, consts: packageConsts(files)}
		for _, f := range files {
			s.scanFile(f)
		}
		for name, kind := range s.found {
			if prev, ok := metrics[name]; ok && prev != kind {
				t.Errorf("metric %s is defined as both %s and %s", name, prev, kind)
			}
			metrics[name] = kind
			byDir[dir] = append(byDir[dir], name)
		}
		unresolved = append(unresolved, s.unresolved...)
	}
	return metrics, byDir, unresolved
}

// scanner walks one package.
type scanner struct {
	fset       *token.FileSet
	consts     map[string]ast.Expr // string constants of the package, by name
	found      map[string]metricKind
	unresolved []string
}

// parsePackage parses the non-test Go files of dir.
func parsePackage(t *testing.T, dir string) (*token.FileSet, []*ast.File) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parse %s: %v", p, err)
		}
		files = append(files, f)
	}
	return fset, files
}

// packageConsts maps the constants declared in files (at any level) to
// their value expressions.
func packageConsts(files []*ast.File) map[string]ast.Expr {
	consts := map[string]ast.Expr{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			decl, ok := n.(*ast.GenDecl)
			if !ok || decl.Tok != token.CONST {
				return true
			}
			for _, spec := range decl.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						consts[name.Name] = vs.Values[i]
					}
				}
			}
			return true
		})
	}
	return consts
}

// promName is the local name of the prometheus import in f ("" if none).
func promName(f *ast.File) string {
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == promPkg {
			if imp.Name != nil {
				return imp.Name.Name
			}
			return "prometheus"
		}
	}
	return ""
}

// isProm reports whether e is prom.<sel> and returns sel.
func isProm(e ast.Expr, prom string) (string, bool) {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return "", false
	}
	x, ok := sel.X.(*ast.Ident)
	if !ok || x.Name != prom {
		return "", false
	}
	return sel.Sel.Name, true
}

func (s *scanner) scanFile(f *ast.File) {
	prom := promName(f)
	if prom == "" {
		return
	}
	if s.found == nil {
		s.found = map[string]metricKind{}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			typ, ok := isProm(n.Type, prom)
			if !ok || !strings.HasSuffix(typ, "Opts") {
				return true
			}
			kind := kindPlain
			switch typ {
			case "HistogramOpts":
				kind = kindHistogram
			case "SummaryOpts":
				kind = kindSummary
			}
			parts := map[string]string{}
			for _, el := range n.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, ok := kv.Key.(*ast.Ident)
				if !ok || (key.Name != "Namespace" && key.Name != "Subsystem" && key.Name != "Name") {
					continue
				}
				v, ok := s.str(kv.Value, prom, map[string]bool{})
				if !ok {
					s.unresolve(kv.Value)
					return true
				}
				parts[key.Name] = v
			}
			if name := fqName(parts["Namespace"], parts["Subsystem"], parts["Name"]); name != "" {
				s.found[name] = kind
			}
		case *ast.CallExpr:
			if fn, ok := isProm(n.Fun, prom); ok && fn == "NewDesc" && len(n.Args) > 0 {
				if name, ok := s.str(n.Args[0], prom, map[string]bool{}); ok {
					s.found[name] = kindPlain
				} else {
					s.unresolve(n.Args[0])
				}
			}
		}
		return true
	})
}

func (s *scanner) unresolve(e ast.Expr) {
	s.unresolved = append(s.unresolved, s.fset.Position(e.Pos()).String())
}

// str evaluates a string expression built from literals, package constants,
// + and prometheus.BuildFQName. seen stops constant cycles.
func (s *scanner) str(e ast.Expr, prom string, seen map[string]bool) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		v, err := strconv.Unquote(e.Value)
		return v, err == nil
	case *ast.ParenExpr:
		return s.str(e.X, prom, seen)
	case *ast.Ident:
		c, ok := s.consts[e.Name]
		if !ok || seen[e.Name] {
			return "", false
		}
		seen[e.Name] = true
		return s.str(c, prom, seen)
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		l, ok1 := s.str(e.X, prom, seen)
		r, ok2 := s.str(e.Y, prom, seen)
		return l + r, ok1 && ok2
	case *ast.CallExpr:
		if fn, ok := isProm(e.Fun, prom); !ok || fn != "BuildFQName" || len(e.Args) != 3 {
			return "", false
		}
		var p [3]string
		for i, a := range e.Args {
			v, ok := s.str(a, prom, seen)
			if !ok {
				return "", false
			}
			p[i] = v
		}
		return fqName(p[0], p[1], p[2]), true
	}
	return "", false
}

// fqName joins the non-empty parts with "_", as prometheus.BuildFQName does
// (no name, no metric).
func fqName(namespace, subsystem, name string) string {
	if name == "" {
		return ""
	}
	var parts []string
	for _, p := range []string{namespace, subsystem, name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

var (
	promString = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promIdent  = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// referencedNames returns the vipd_ series names and vipd: recorded names a
// PromQL expression uses. Quoted strings (label values) are ignored.
func referencedNames(expr string) (series, recorded []string) {
	for _, id := range promIdent.FindAllString(promString.ReplaceAllString(expr, `""`), -1) {
		switch {
		case strings.HasPrefix(id, "vipd_"):
			series = append(series, id)
		case strings.HasPrefix(id, "vipd:"):
			recorded = append(recorded, id)
		}
	}
	return series, recorded
}

// checkSeries returns why series is not exported by any of metrics ("" if
// it is): histograms expose only _bucket, _sum and _count.
func checkSeries(series string, metrics map[string]metricKind) string {
	if kind, ok := metrics[series]; ok {
		if kind == kindHistogram {
			return fmt.Sprintf("%s is a histogram: query %s_bucket, _sum or _count", series, series)
		}
		return ""
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suffix)
		if !ok {
			continue
		}
		switch kind, found := metrics[base]; {
		case !found:
		case kind == kindHistogram, kind == kindSummary && suffix != "_bucket":
			return ""
		default:
			return fmt.Sprintf("%s: %s is a %s, it has no %s series", series, base, kind, suffix)
		}
	}
	return fmt.Sprintf("%s is not defined in the Go sources", series)
}

func TestScanFindsEveryWayToNameAMetric(t *testing.T) {
	dir := t.TempDir()
	src := `package fake

import prom "github.com/prometheus/client_golang/prometheus"

const (
	namespace = "vipd"
	subsystem = "fake"
	prefix    = namespace + "_" + subsystem + "_"
)

var (
	a = prom.NewCounter(prom.CounterOpts{Namespace: namespace, Subsystem: subsystem, Name: "triple_total"})
	b = prom.NewGauge(prom.GaugeOpts{Namespace: namespace, Name: "no_subsystem"})
	c = prom.NewHistogram(prom.HistogramOpts{Name: prefix + "latency_seconds"})
	d = prom.NewSummary(prom.SummaryOpts{Name: "vipd_fake_summary_seconds"})
	e = prom.NewDesc(prom.BuildFQName(namespace, subsystem, "desc_total"), "help", nil, nil)
	f = prom.NewDesc("vipd_fake_literal", "help", nil, nil)
	g = prom.NewGauge(prom.GaugeOpts{Name: dynamicName()})
)

func dynamicName() string { return "vipd_fake_dynamic" }
`
	ignored := `package fake

import "github.com/prometheus/client_golang/prometheus"

var h = prometheus.NewGauge(prometheus.GaugeOpts{Name: "vipd_fake_only_in_tests"})
`
	for name, body := range map[string]string{"fake.go": src, "fake_test.go": ignored} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	metrics, _, unresolved := scanMetrics(t, dir)
	want := map[string]metricKind{
		"vipd_fake_triple_total":    kindPlain,
		"vipd_no_subsystem":         kindPlain,
		"vipd_fake_latency_seconds": kindHistogram,
		"vipd_fake_summary_seconds": kindSummary,
		"vipd_fake_desc_total":      kindPlain,
		"vipd_fake_literal":         kindPlain,
	}
	if !maps.Equal(metrics, want) {
		t.Errorf("scan found %v\nwant %v", metrics, want)
	}
	line := strings.Count(src[:strings.Index(src, "dynamicName()}")], "\n") + 1
	if at := fmt.Sprintf("fake.go:%d:", line); len(unresolved) != 1 || !strings.Contains(unresolved[0], at) {
		t.Errorf("unresolved = %v, want the dynamic name at %s", unresolved, at)
	}
}

func TestSeriesCheckKnowsHistogramsAndLabelValues(t *testing.T) {
	metrics := map[string]metricKind{"vipd_c_total": kindPlain, "vipd_h_seconds": kindHistogram, "vipd_s_seconds": kindSummary}
	for series, ok := range map[string]bool{
		"vipd_c_total": true, "vipd_c_total_count": false, "vipd_missing": false,
		"vipd_h_seconds": false, "vipd_h_seconds_bucket": true, "vipd_h_seconds_sum": true, "vipd_h_seconds_count": true,
		"vipd_s_seconds": true, "vipd_s_seconds_sum": true, "vipd_s_seconds_bucket": false,
	} {
		if why := checkSeries(series, metrics); (why == "") != ok {
			t.Errorf("checkSeries(%s) = %q, want ok=%v", series, why, ok)
		}
	}

	series, recorded := referencedNames(`sum by (pool) (rate(vipd_a_total{reason="vipd_not_a_metric"}[5m])) / vipd:b:rate5m > on() up{job='vipd_x'}`)
	if !slices.Equal(series, []string{"vipd_a_total"}) || !slices.Equal(recorded, []string{"vipd:b:rate5m"}) {
		t.Errorf("referencedNames: series %v, recorded %v; want [vipd_a_total] and [vipd:b:rate5m]", series, recorded)
	}
}
