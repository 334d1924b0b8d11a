package bed

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPhasesReadTheFailoverAfterTheFault(t *testing.T) {
	log := `{"level":"info","ts":"2026-12-01T10:00:00.990Z","msg":"entering candidate state"}
not json: a Go panic or a backend's output
{"level":"info","ts":"2026-12-01T10:00:01.060Z","msg":"heartbeat timeout reached, starting election"}
{"level":"info","ts":"2026-12-01T10:00:01.061Z","msg":"entering candidate state"}
{"level":"info","ts":"2026-12-01T10:00:01.075Z","msg":"leadership event","leader":false}
{"level":"info","ts":"2026-12-01T10:00:01.080Z","msg":"entering candidate state"}
{"level":"info","ts":"2026-12-01T10:00:01.082Z","msg":"election won"}
{"level":"info","ts":"2026-12-01T10:00:01.090Z","msg":"entering candidate state"}
{"level":"info","ts":"2026-12-01T10:00:01.088Z","msg":"leadership event","leader":true}
{"level":"info","ts":"2026-12-01T10:00:01.089Z","msg":"vip claimed"}
{"level":"info","ts":"2026-12-01T10:00:01.090Z","msg":"vip announced"}
{"level":"info","ts":"2026-12-01T10:00:02.000Z","msg":"vip claimed"}
`
	path := filepath.Join(t.TempDir(), "n2.log")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	fault := time.Date(2026, 12, 1, 10, 0, 1, 0, time.UTC)
	got, err := Phases(path, fault)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"detected": "01.060", "candidate": "01.080", "won": "01.082",
		"confirmed": "01.088", "claimed": "01.089", "announced": "01.090",
	}
	if len(got) != len(want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
	for name, w := range want {
		if s := got[name].UTC().Format("05.000"); s != w {
			t.Errorf("%s at %s, want %s", name, s, w)
		}
	}
}
