// Package testenv lets a test say what it needs from the machine (root, a
// program, a file) and why. A need that is not met skips the test with that
// reason, except under CI (CI=true): there the environment is meant to have
// everything, so a missing need fails the test and a broken machine cannot
// pass as green. It also tells a test what the machine did to it: a free
// port to bind (FreePort), and the stretches in which the host stopped the
// test process (WatchFreezes), which no code under test can be blamed for.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// TB is the part of testing.TB the checks use.
type TB interface {
	Helper()
	Skip(args ...any)
	Fatal(args ...any)
}

// UnderCI reports whether the CI variable says this is a CI run (CI=true, as
// .ci/run's environment sets it, or any other value strconv.ParseBool takes
// as true).
func UnderCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// NeedRoot stops t unless it runs as root; why says what needs root.
func NeedRoot(t TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		unmet(t, "needs root: "+why+" (sudo make test runs it as root)")
	}
}

// NeedProgram returns the path of program on PATH, or stops t; why says
// what the test uses it for.
func NeedProgram(t TB, program, why string) string {
	t.Helper()
	path, err := exec.LookPath(program)
	if err != nil {
		unmet(t, fmt.Sprintf("needs %s on PATH: %s: %v", program, why, err))
	}
	return path
}

// NeedFile stops t unless path exists; why says what the test uses it for.
func NeedFile(t TB, path, why string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		unmet(t, fmt.Sprintf("needs %s: %s: %v", path, why, err))
	}
}

func unmet(t TB, reason string) {
	t.Helper()
	if UnderCI() {
		t.Fatal(reason + "; under CI (CI=true) a test that cannot run is a failure, not a skip")
		return
	}
	t.Skip(reason)
}
