package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vipd/vipd/internal/testenv"
)

// A real go test run over testdata/fixture: one package with a failure,
// passes and skips, one with only a skip.
func TestRunPrintsFailuresAndNamesEverySkip(t *testing.T) {
	goBin := testenv.NeedProgram(t, "go", "runs go test on the fixture")
	t.Chdir("testdata/fixture")
	var out, errOut bytes.Buffer
	code := run(goBin, []string{"-count=1", "./..."}, &out, &errOut)
	if code != 1 {
		t.Errorf("exit code %d, want go test's 1 for a failed test; stderr:\n%s", code, errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"--- FAIL: TestFails",
		"the reason it failed",
		"FAIL\tfixture/a",
		"ok  \tfixture/b",
		"skipped 4 tests:\n" +
			"  needs nft on PATH\n" +
			"    fixture/a: TestSub/skipped\n" +
			"  needs root: builds namespaces\n" +
			"    fixture/a: TestSkipsForRoot TestSkipsForRootToo\n" +
			"    fixture/b: TestB\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, noise := range []string{"output of a passing test", "a line before the skip", "=== RUN", "--- PASS", "--- SKIP", "\nPASS\n"} {
		if strings.Contains(got, noise) {
			t.Errorf("output has %q, which go test without -v does not print:\n%s", noise, got)
		}
	}
}

func TestSkipReasonIsTheSkipMessage(t *testing.T) {
	for _, c := range []struct {
		out  []string
		want string
	}{
		{[]string{"    x_test.go:12: needs root: a: b\n", "--- SKIP: TestX (0.00s)\n"}, "needs root: a: b"},
		{[]string{"    x_test.go:3: logged first\n", "    x_test.go:4: skip message\n", "--- SKIP: TestX (0.00s)\n"}, "skip message"},
		{[]string{"--- SKIP: TestX (0.00s)\n"}, "(no reason given)"},
	} {
		if got := skipReason(c.out); got != c.want {
			t.Errorf("skipReason(%q) = %q, want %q", c.out, got, c.want)
		}
	}
}
