package bed

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The bed ranks vipd from the unit file itself: Nice=-10 and CPUWeight=1000
// (ten times systemd's default) give nice -10 and an autogroup nice of -10,
// whose CFS weight is about ten times the default one's.
func TestUnitSchedReadsTheSystemdUnit(t *testing.T) {
	s, err := UnitSched("../../deploy/systemd/vipd.service")
	if err != nil {
		t.Fatal(err)
	}
	if s != (Sched{Nice: -10, GroupNice: -10}) {
		t.Errorf("deploy/systemd/vipd.service ranks as %+v, want nice -10, group nice -10", s)
	}
	for _, tc := range []struct {
		unit string
		want Sched
		err  string
	}{
		{"[Service]\nExecStart=/bin/true\n", Sched{}, ""},
		{"[Service]\nCPUWeight=100\nNice=5\n", Sched{Nice: 5}, ""},
		{"[Service]\nCPUWeight=10\n", Sched{GroupNice: 10}, ""},
		{"[Service]\nNice=-21\n", Sched{}, "line 2: Nice=-21"},
		{"[Service]\nCPUWeight=lots\n", Sched{}, `line 2: CPUWeight="lots"`},
		{"[Service]\nCPUWeight=0\n", Sched{}, "line 2: CPUWeight=0"},
	} {
		path := filepath.Join(t.TempDir(), "x.service")
		if err := os.WriteFile(path, []byte(tc.unit), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := UnitSched(path)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.unit, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one naming %q", tc.unit, err, tc.err)
		case tc.err == "" && got != tc.want:
			t.Errorf("%q: %+v, want %+v", tc.unit, got, tc.want)
		}
	}
}

// A process started with a Sched runs at its nice, in a session (so an
// autogroup) of its own whose nice is GroupNice; one without shares the
// test's session.
func TestStartWithSchedRanksTheProcess(t *testing.T) {
	b := newBed(t)
	h := b.Host("n1")
	ranked, err := b.StartWith(h, "ranked", ProcOptions{Sched: &Sched{Nice: -5, GroupNice: -7}}, "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := b.Start(h, "plain", "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Proc{ranked, plain} {
		waitExec(t, p, "sleep") // ip and nice exec the command: read its own fields
	}
	if got := procStatField(t, ranked.Pid(), 19); got != "-5" {
		t.Errorf("ranked process nice %s, want -5", got)
	}
	if got := procStatField(t, plain.Pid(), 19); got != "0" {
		t.Errorf("plain process nice %s, want 0", got)
	}
	if s := procStatField(t, ranked.Pid(), 6); s != strconv.Itoa(ranked.Pid()) {
		t.Errorf("ranked process in session %s, want its own (%d)", s, ranked.Pid())
	}
	own, err := unix.Getsid(0)
	if err != nil {
		t.Fatal(err)
	}
	if s := procStatField(t, plain.Pid(), 6); s != strconv.Itoa(own) {
		t.Errorf("plain process in session %s, want the test's %d", s, own)
	}
	ag, err := os.ReadFile("/proc/" + strconv.Itoa(ranked.Pid()) + "/autogroup")
	if os.IsNotExist(err) {
		t.Log("no autogroups in this kernel: group nice not checked")
		return
	}
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(ag)), "nice -7") {
		t.Errorf("ranked process autogroup %q (%v), want nice -7", ag, err)
	}
	ranked.Kill()
	if err := ranked.Wait(5 * time.Second); err == nil {
		t.Error("killed process exited cleanly")
	}
}

// waitExec waits until the process runs the command named comm.
func waitExec(t *testing.T, p *Proc, comm string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/comm")
		if strings.TrimSpace(string(b)) == comm {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s runs %q, not %s, after 5s", p.Name, b, comm)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procStatField returns field n (1-based, as in proc(5)) of /proc/PID/stat.
func procStatField(t *testing.T, pid, n int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	return f[n-3]
}
