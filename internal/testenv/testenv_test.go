package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a TB that records the call a check made instead of stopping.
type recorder struct {
	skipped, failed string
}

func (r *recorder) Helper()           {}
func (r *recorder) Skip(args ...any)  { r.skipped = strings.TrimSpace(sprint(args)) }
func (r *recorder) Fatal(args ...any) { r.failed = strings.TrimSpace(sprint(args)) }

func sprint(args []any) string {
	var b strings.Builder
	for _, a := range args {
		b.WriteString(a.(string))
	}
	return b.String()
}

func TestUnmetNeedSkipsOutsideCIAndFailsUnderCI(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent")
	present := filepath.Join(t.TempDir(), "present")
	if err := os.WriteFile(present, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name   string
		met    bool
		check  func(TB)
		reason string
	}{
		{"program on PATH", true, func(r TB) { NeedProgram(r, "sh", "runs a script") }, ""},
		{"program missing", false, func(r TB) { NeedProgram(r, "vipd-no-such-program", "runs it") }, "needs vipd-no-such-program on PATH: runs it"},
		{"file present", true, func(r TB) { NeedFile(r, present, "reads it") }, ""},
		{"file missing", false, func(r TB) { NeedFile(r, missing, "run make build first") }, "needs " + missing + ": run make build first"},
		{"root", os.Geteuid() == 0, func(r TB) { NeedRoot(r, "builds namespaces") }, "needs root: builds namespaces"},
	}
	for _, ci := range []string{"", "false", "true", "1"} {
		t.Setenv("CI", ci)
		underCI := ci == "true" || ci == "1"
		for _, c := range checks {
			var r recorder
			c.check(&r)
			switch {
			case c.met:
				if r.skipped != "" || r.failed != "" {
					t.Errorf("CI=%q, %s: met need stopped the test: skip %q, fatal %q", ci, c.name, r.skipped, r.failed)
				}
			case underCI:
				if r.skipped != "" || !strings.HasPrefix(r.failed, c.reason) || !strings.Contains(r.failed, "CI=true") {
					t.Errorf("CI=%q, %s: want a failure starting %q and naming CI=true; got skip %q, fatal %q", ci, c.name, c.reason, r.skipped, r.failed)
				}
			default:
				if r.failed != "" || !strings.HasPrefix(r.skipped, c.reason) {
					t.Errorf("CI=%q, %s: want a skip starting %q; got skip %q, fatal %q", ci, c.name, c.reason, r.skipped, r.failed)
				}
			}
		}
	}
}

func TestNeedProgramReturnsItsPath(t *testing.T) {
	var r recorder
	want, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh on PATH: %v", err)
	}
	if got := NeedProgram(&r, "sh", "runs a script"); got != want {
		t.Fatalf("NeedProgram(sh) = %q, want %q", got, want)
	}
}

// With a real *testing.T the unmet need ends the test: skipped, so the run
// passes, outside CI; failed, so the run fails, under CI.
func TestRealTestSkipsOutsideCIAndFailsUnderCI(t *testing.T) {
	if os.Getenv("TESTENV_HELPER") == "1" {
		NeedProgram(t, "vipd-no-such-program", "the helper's need")
		t.Fatal("NeedProgram returned after an unmet need")
	}
	for _, c := range []struct {
		ci, status string
		ok         bool
	}{{"", "--- SKIP", true}, {"true", "--- FAIL", false}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRealTestSkipsOutsideCIAndFailsUnderCI$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_HELPER=1", "CI="+c.ci)
		out, err := cmd.CombinedOutput()
		if (err == nil) != c.ok || !strings.Contains(string(out), c.status) || !strings.Contains(string(out), "the helper's need") {
			t.Errorf("CI=%q: want %s (run ok: %v) with the reason; got err %v:\n%s", c.ci, c.status, c.ok, err, out)
		}
	}
}
