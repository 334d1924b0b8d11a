// Command testrun runs go test with -json and prints what go test prints
// without -v (build errors, package results, the whole output of failed
// tests), then every skipped test grouped by its reason: a run that skips
// tests says which and why. `make test` runs it.
//
//	go run ./internal/testrun [-go PATH] [go test flags] [packages]
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
)

func main() {
	args := os.Args[1:]
	goBin := "go"
	if len(args) >= 2 && args[0] == "-go" {
		goBin, args = args[1], args[2:]
	}
	os.Exit(run(goBin, args, os.Stdout, os.Stderr))
}

func run(goBin string, args []string, stdout, stderr io.Writer) int {
	cmd := exec.Command(goBin, append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = stderr
	events, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintf(stderr, "testrun: %v\n", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "testrun: %v\n", err)
		return 1
	}
	r := newReport(stdout)
	readErr := r.read(events)
	waitErr := cmd.Wait()
	r.printSkips()
	if readErr != nil {
		fmt.Fprintf(stderr, "testrun: reading go test -json: %v\n", readErr)
		return 1
	}
	var exit *exec.ExitError
	if errors.As(waitErr, &exit) {
		return max(exit.ExitCode(), 1)
	}
	if waitErr != nil {
		fmt.Fprintf(stderr, "testrun: %v\n", waitErr)
		return 1
	}
	return 0
}

// event is one line of go test -json (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output events
	Test       string
	Output     string
}

type testID struct{ pkg, test string }

type skip struct {
	testID
	reason string
}

// report turns the event stream into go test's terse output and collects
// the skips.
type report struct {
	w       io.Writer
	running map[testID][]string // output of tests that have not ended yet
	skips   []skip
}

func newReport(w io.Writer) *report {
	return &report{w: w, running: map[testID][]string{}}
}

func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not an event (go test prints some failures as plain text): pass it on.
			fmt.Fprintln(r.w, sc.Text())
			continue
		}
		r.handle(e)
	}
	return sc.Err()
}

func (r *report) handle(e event) {
	if e.Action == "build-output" {
		io.WriteString(r.w, e.Output)
		return
	}
	id := testID{e.Package, e.Test}
	if e.Test == "" {
		switch e.Action {
		case "output":
			// The lines go test prints only with -v.
			if e.Output != "PASS\n" && !strings.HasPrefix(e.Output, "testing: warning: no tests to run") {
				io.WriteString(r.w, e.Output)
			}
		case "fail":
			// A package that died (panic, timeout) leaves tests that never
			// ended: show what they printed.
			for t, out := range r.running {
				if t.pkg == e.Package {
					io.WriteString(r.w, strings.Join(out, ""))
					delete(r.running, t)
				}
			}
		}
		return
	}
	switch e.Action {
	case "output":
		if !strings.HasPrefix(e.Output, "=== ") { // RUN, PAUSE, CONT, NAME: -v only
			r.running[id] = append(r.running[id], e.Output)
		}
	case "fail":
		io.WriteString(r.w, strings.Join(r.running[id], ""))
		delete(r.running, id)
	case "pass":
		delete(r.running, id)
	case "skip":
		r.skips = append(r.skips, skip{id, skipReason(r.running[id])})
		delete(r.running, id)
	}
}

// skipReason is the last line a skipped test printed before its
// "--- SKIP" line, without the file:line prefix: the t.Skip message.
func skipReason(out []string) string {
	for i := len(out) - 1; i >= 0; i-- {
		line := strings.TrimSpace(out[i])
		if line == "" || strings.HasPrefix(line, "--- SKIP") {
			continue
		}
		if loc, msg, ok := strings.Cut(line, ": "); ok && strings.Contains(loc, ".go:") && !strings.Contains(loc, " ") {
			return msg
		}
		return line
	}
	return "(no reason given)"
}

// printSkips lists the skipped tests grouped by reason. Reasons and packages
// are sorted (packages run in parallel, so their order varies); the tests of
// a package keep the order they ran in.
func (r *report) printSkips() {
	if len(r.skips) == 0 {
		return
	}
	byReason := map[string]map[string][]string{} // reason -> package -> tests
	for _, s := range r.skips {
		if byReason[s.reason] == nil {
			byReason[s.reason] = map[string][]string{}
		}
		byReason[s.reason][s.pkg] = append(byReason[s.reason][s.pkg], s.test)
	}
	fmt.Fprintf(r.w, "skipped %d tests:\n", len(r.skips))
	for _, reason := range slices.Sorted(maps.Keys(byReason)) {
		fmt.Fprintf(r.w, "  %s\n", reason)
		for _, pkg := range slices.Sorted(maps.Keys(byReason[reason])) {
			fmt.Fprintf(r.w, "    %s: %s\n", pkg, strings.Join(byReason[reason][pkg], " "))
		}
	}
}
