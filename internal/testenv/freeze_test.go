package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestWatchFreezesSeesAStoppedProcess stops this process for 150 ms with
// SIGSTOP from a child: the watch reports that freeze, and not as the
// host's, since the machine kept running and nothing was stolen for it.
func TestWatchFreezesSeesAStoppedProcess(t *testing.T) {
	w := WatchFreezes(50 * time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	pid := strconv.Itoa(os.Getpid())
	out, err := exec.Command("sh", "-c", "kill -STOP "+pid+"; sleep 0.15; kill -CONT "+pid).CombinedOutput()
	if err != nil {
		t.Fatalf("stop and continue this process: %v: %s", err, out)
	}
	time.Sleep(20 * time.Millisecond)
	freezes, err := w.Stop()
	if err != nil {
		t.Fatal(err)
	}
	var longest Freeze
	for _, f := range freezes {
		if f.Gap > longest.Gap {
			longest = f
		}
	}
	t.Logf("freezes: %v", freezes)
	if longest.Gap < 140*time.Millisecond {
		t.Fatalf("longest freeze seen %v, want the 150 ms stop", longest.Gap)
	}
	if longest.ByHost() {
		t.Fatalf("%v counted as the host's: a stopped process is this machine's doing", longest)
	}
}

// TestFreezeExplainsALeaseLossOnlyWhenTheHostTookLongEnough: with a 100 ms
// heartbeat timeout and a 70 ms lease, a freeze explains a change during it
// or within a second after, if the host stole at least half of it and it
// lasted 50 ms or more.
func TestFreezeExplainsALeaseLossOnlyWhenTheHostTookLongEnough(t *testing.T) {
	const heartbeat, lease = 100 * time.Millisecond, 70 * time.Millisecond
	end := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	host := Freeze{End: end, Gap: 100 * time.Millisecond, Steal: 200 * time.Millisecond}
	for _, tc := range []struct {
		name string
		f    Freeze
		at   time.Time
		want bool
	}{
		{"before the freeze", host, end.Add(-101 * time.Millisecond), false},
		{"as it starts", host, end.Add(-100 * time.Millisecond), true},
		{"as it ends", host, end, true},
		{"ten heartbeat timeouts after", host, end.Add(time.Second), true},
		{"later", host, end.Add(time.Second + time.Nanosecond), false},
		{"half stolen", Freeze{End: end, Gap: 100 * time.Millisecond, Steal: 50 * time.Millisecond}, end, true},
		{"less than half stolen", Freeze{End: end, Gap: 100 * time.Millisecond, Steal: 49 * time.Millisecond}, end, false},
		{"as long as the lease less a fifth of the timeout", Freeze{End: end, Gap: 50 * time.Millisecond, Steal: 100 * time.Millisecond}, end, true},
		{"shorter", Freeze{End: end, Gap: 49 * time.Millisecond, Steal: 100 * time.Millisecond}, end, false},
	} {
		if got := tc.f.ExplainsLeaseLoss(tc.at, heartbeat, lease); got != tc.want {
			t.Errorf("%s: %v explains a change at %s: %v, want %v", tc.name, tc.f, tc.at.Sub(end), got, tc.want)
		}
	}
}
