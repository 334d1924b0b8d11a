package bench

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRunDirectFillsEveryRowForEveryRound(t *testing.T) {
	var progress strings.Builder
	rep, err := Run(context.Background(), Options{
		Duration: 100 * time.Millisecond, Rounds: 2,
		Metrics: LocalMetrics, Targets: []string{"direct"},
		Concurrency: 2, IdleConns: 10, Dir: t.TempDir(), Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Targets, []string{"direct"}) {
		t.Fatalf("targets = %v", rep.Targets)
	}
	if len(rep.Rows) != 19 {
		t.Fatalf("%d rows, want 19 (2+2+5+5+4 and other processes' CPU)", len(rep.Rows))
	}
	// Measured for the timed runs; NaN for the idle run.
	other := rep.Rows[18].Values["direct"]
	if n := len(valid(other)); len(other) != 2*len(LocalMetrics) || n != 2*(len(LocalMetrics)-1) {
		t.Errorf("other processes' CPU: %v, want one per run, valid but for the idle runs", other)
	}
	for _, r := range rep.Rows[:18] {
		vals := r.Values["direct"]
		if len(vals) != 2 {
			t.Errorf("%s: %d values, want one per round", r.Name, len(vals))
			continue
		}
		// Direct has no proxy: no proxy CPU and no proxy memory.
		noProxy := strings.Contains(r.Name, "proxy ") || strings.Contains(r.Name, "RSS") || strings.Contains(r.Name, "slab")
		for _, v := range vals {
			if noProxy != math.IsNaN(v) {
				t.Errorf("%s: value %v (NaN expected: %v)", r.Name, v, noProxy)
			}
		}
	}
	if n := strings.Count(progress.String(), "round "); n != 2*len(LocalMetrics) {
		t.Errorf("%d progress lines, want %d:\n%s", n, 2*len(LocalMetrics), progress.String())
	}
	t.Logf("warnings: %v", rep.Warnings)
}

func TestRunStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, Options{
		Duration: time.Second, Rounds: 3, Metrics: []string{MetricPairs},
		Targets: []string{"direct"}, Concurrency: 1, IdleConns: 1, Dir: t.TempDir(),
	})
	if err == nil {
		t.Fatal("Run with a cancelled context returned no error")
	}
}

func TestRotateChangesWhoGoesFirst(t *testing.T) {
	ts := []*Target{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	names := func(ts []*Target) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.Name)
		}
		return strings.Join(s, "")
	}
	for round, want := range []string{"abc", "bca", "cab", "abc"} {
		if got := names(rotate(ts, round)); got != want {
			t.Errorf("round %d: %s, want %s", round, got, want)
		}
	}
	if names(ts) != "abc" {
		t.Errorf("rotate changed its input: %s", names(ts))
	}
}

func TestParseListValidatesAndDeduplicates(t *testing.T) {
	got, err := ParseList("only", " pairs,bulk1,pairs ", AllMetrics)
	if err != nil || !slices.Equal(got, []string{"pairs", "bulk1"}) {
		t.Errorf("ParseList = %v, %v; want [pairs bulk1]", got, err)
	}
	all, err := ParseList("only", "", AllMetrics)
	if err != nil || !slices.Equal(all, AllMetrics) {
		t.Errorf("empty list = %v, %v; want all", all, err)
	}
	if _, err := ParseList("only", "bulk2", AllMetrics); err == nil || !strings.Contains(err.Error(), `"bulk2"`) {
		t.Errorf("unknown item: err = %v, want it named", err)
	}
}

func TestParseWrkReadsRateAndErrors(t *testing.T) {
	out := []byte(`Running 3s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  402.11us  12.00ms   80.00%
    Req/Sec    51.2k     2.1k    55.0k    70.00%
  152934 requests in 3.00s, 24.36MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  50978.12
Transfer/sec:      8.12MB
`)
	r, err := ParseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 152934 || r.PerSec != 50978.12 || r.Errors != 7 {
		t.Fatalf("parsed %+v, want 152934 requests, 50978.12/s, 7 errors", r)
	}
	if _, err := ParseWrk([]byte("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil {
		t.Fatal("output without a summary parsed without error")
	}
}
