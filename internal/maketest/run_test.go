// Package maketest runs the Makefile's targets as a user would and checks
// what the user sees.
package maketest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/testenv"
)

// lockedBuffer collects make's output from the goroutines exec starts.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePorts returns n distinct loopback ports that are free for TCP and UDP
// (memberlist gossips on both) at the time of the call.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for len(ports) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken for UDP: keep the TCP one held so it is not picked again
		}
		held = append(held, pc)
		ports = append(ports, port)
	}
	return ports
}

// Ctrl-C in a terminal sends SIGINT to the whole foreground process group:
// make, the recipe and everything it started. make run must then end
// quietly, with every process it started gone and its ports free.
func TestMakeRunEndsQuietlyOnCtrlC(t *testing.T) {
	testenv.NeedProgram(t, "make", "the test runs make run")
	testenv.NeedProgram(t, "bash", "make run's script is a bash script")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	p := freePorts(t, 6)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", p[i]) }
	frontend := addr(0)
	cmd := exec.Command("make", "--no-print-directory", "-C", root, "run",
		"BIN="+t.TempDir(), "RUN_DATA="+t.TempDir(),
		"RUN_FRONTEND="+frontend, "RUN_ADMIN="+addr(1), "RUN_RAFT="+addr(2), "RUN_GOSSIP="+addr(3),
		"RUN_BACKEND_A="+addr(4), "RUN_BACKEND_B="+addr(5))
	// Not a sub-make of a make that runs this test.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" && k != "MAKEOVERRIDES" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a group of its own, as a terminal's foreground job
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second // a leftover process holding make's output must not block Wait
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) }) // only if the test failed half-way

	// The deadline bounds make's build of the binaries plus the first
	// health checks; it is a failure bound, not a speed claim.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if body, err := waitForAnswer(ctx, "http://"+frontend+"/", exited); err != nil {
		t.Fatalf("make run: frontend %s never answered: %v\noutput:\n%s", frontend, err, out.String())
	} else {
		t.Logf("frontend answered: %q", body)
	}

	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var werr error
	select {
	case werr = <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("make run still running 30 s after Ctrl-C\noutput:\n%s", out.String())
	}
	// GNU make ends itself with the SIGINT it caught once its recipe has
	// ended, whatever the recipe's status: the conventional end of a
	// Ctrl-C, which a calling script sees and stops on. Quiet means: no
	// other status and no line from make.
	if errors.Is(werr, exec.ErrWaitDelay) {
		t.Errorf("make's output was still open %s after it ended: a process it started holds it", cmd.WaitDelay)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !(ws.Signaled() && ws.Signal() == syscall.SIGINT) && !(ws.Exited() && ws.ExitStatus() == 0) {
		t.Errorf("make run after Ctrl-C: %v, want exit 0 or the SIGINT it was sent", cmd.ProcessState)
	}
	for _, bad := range []string{"Segmentation fault", "make: ***", "Error", "Terminated", "Killed", "ended on its own"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("make run's output has %q:\n%s", bad, out.String())
		}
	}
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes of make run's group %d are left after it ended (kill 0: %v):\n%s", pgid, err, groupMembers(pgid))
	}
	for i := range p {
		ln, err := net.Listen("tcp", addr(i))
		if err != nil {
			t.Errorf("port %s still held after make run ended: %v", addr(i), err)
			continue
		}
		ln.Close()
	}
}

// waitForAnswer polls url until it answers 200, make ends, or ctx ends.
func waitForAnswer(ctx context.Context, url string, exited <-chan error) (string, error) {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return string(body), nil
			}
		}
		select {
		case err := <-exited:
			return "", fmt.Errorf("make ended first: %v", err)
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// groupMembers lists the processes of group pgid from /proc, for the
// failure message.
func groupMembers(pgid int) string {
	var b strings.Builder
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		stat, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 2 && f[2] == fmt.Sprint(pgid) {
			cmdline, _ := os.ReadFile(filepath.Dir(d) + "/cmdline")
			fmt.Fprintf(&b, "  %s %s\n", filepath.Base(filepath.Dir(d)), bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	return b.String()
}
