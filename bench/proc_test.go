package bench

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseStatReadsTimesAndRSSPastANameWithSpaces(t *testing.T) {
	// Fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime prio nice threads itreal start vsize rss
	stat := "42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1234 100000 300 18446744073709551615\n"
	u, err := parseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if u.CPU != 3*time.Second {
		t.Errorf("CPU = %v, want 3s (300 ticks)", u.CPU)
	}
	if want := int64(300 * os.Getpagesize()); u.RSS != want {
		t.Errorf("RSS = %d, want %d", u.RSS, want)
	}
	if _, err := parseStat([]byte("42 (x) S 1 2")); err == nil {
		t.Error("a short stat line parsed without error")
	}
}

func TestReadUsageOfSelf(t *testing.T) {
	u, err := ReadUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if u.RSS <= 0 {
		t.Errorf("own RSS = %d, want > 0", u.RSS)
	}
}

func TestFreePortIsBindable(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d from FreePort is not bindable: %v", port, err)
	}
	ln.Close()
}

func TestProcessStopEndsTheChildAndIsIdempotent(t *testing.T) {
	log := filepath.Join(t.TempDir(), "child.log")
	p, err := StartProcess("sleeper", log, []string{"GREETING=started"}, "sh", "-c", "echo $GREETING; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	if err := waitForTest(func() bool { return strings.Contains(p.LogTail(5), "started") }); err != nil {
		t.Fatalf("child never wrote its log: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child %d still exists after Stop (kill 0: %v)", pid, err)
	}
}

func TestStartProcessReportsAMissingBinary(t *testing.T) {
	_, err := StartProcess("ghost", filepath.Join(t.TempDir(), "log"), nil, "/nonexistent/vipd-ghost")
	if err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("err = %v, want an error naming the process", err)
	}
}

// waitForTest polls cond for up to 10s.
func waitForTest(cond func() bool) error {
	return waitFor(testContext(), 10*time.Second, cond)
}

func TestParseSwitchesSumsVoluntaryAndInvoluntary(t *testing.T) {
	status := "Name:\tvipd\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n"
	n, err := parseSwitches([]byte(status))
	if err != nil || n != 127 {
		t.Fatalf("parseSwitches = %d, %v; want 127", n, err)
	}
	if _, err := parseSwitches([]byte("Name:\tx\nvoluntary_ctxt_switches:\t1\n")); err == nil {
		t.Error("a status with one of the two lines parsed without error")
	}
}

func TestContextSwitchesOfSelfGrow(t *testing.T) {
	before, err := ContextSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // sleeping switches out at least once
	after, err := ContextSwitches(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("context switches went from %d to %d across a sleep", before, after)
	}
}

func TestParseMeminfoReadsKilobytes(t *testing.T) {
	meminfo := "MemTotal:       24684000 kB\nSlab:             168628 kB\nSReclaimable:     119016 kB\n"
	n, err := parseMeminfo([]byte(meminfo), "Slab")
	if err != nil || n != 168628*1024 {
		t.Fatalf("Slab = %d, %v; want %d", n, err, 168628*1024)
	}
	if _, err := parseMeminfo([]byte(meminfo), "KernelStack"); err == nil {
		t.Error("a missing key parsed without error")
	}
}
