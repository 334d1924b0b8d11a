package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vipd/vipd/internal/procstat"
)

// stopGrace is how long a child gets after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// Process is a child daemon (haproxy or vipd) in a process group of its
// own, so a terminal's Ctrl-C reaches only the benchmark, which then stops
// its children itself. The kernel kills the child too if the benchmark dies
// without cleaning up (Pdeathsig).
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File

	done    chan struct{} // closed when the child has exited
	waitErr error         // set before done is closed

	stopOnce sync.Once
}

// StartProcess starts argv with stdout and stderr going to logPath, with
// this process's environment plus env ("KEY=value" entries, which win).
func StartProcess(name, logPath string, env []string, argv ...string) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: log file: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(argv, " "), err)
	}
	p := &Process{name: name, cmd: cmd, logPath: logPath, logFile: logFile, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the child's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed when the child has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the child's process group, then SIGKILL after
// stopGrace, and waits for the child to exit. Safe to call more than once.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	})
	<-p.done
	var exitErr *exec.ExitError
	if errors.As(p.waitErr, &exitErr) {
		return nil // killed by our signal or exited with a code on it: expected
	}
	return p.waitErr
}

// LogTail returns the last n lines of the child's output.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Usage is a reading of a process's resource use.
type Usage struct {
	RSS int64         // resident set size, bytes
	CPU time.Duration // user + system time since start
}

// ContextSwitches sums the voluntary and involuntary context switches of
// every thread of pid. A thread that has exited no longer counts; the
// proxies measured here keep theirs.
func ContextSwitches(pid int) (int64, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("context switches of %d: %w", pid, err)
	}
	var total int64
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/status")
		if err != nil {
			continue // the thread has just exited
		}
		n, err := parseSwitches(b)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// parseSwitches sums the two ctxt_switches lines of a /proc status file.
func parseSwitches(status []byte) (int64, error) {
	var total int64
	found := 0
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "voluntary_ctxt_switches" && k != "nonvoluntary_ctxt_switches") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", k, err)
		}
		total += n
		found++
	}
	if found != 2 {
		return 0, fmt.Errorf("parse /proc status: %d of 2 ctxt_switches lines", found)
	}
	return total, nil
}

// OpenFiles counts the open file descriptors of pid.
func OpenFiles(pid int) (int, error) {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, fmt.Errorf("open files of %d: %w", pid, err)
	}
	return len(entries), nil
}

// ReadUsage reads RSS and CPU time of pid from /proc.
func ReadUsage(pid int) (Usage, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %d: %w", pid, err)
	}
	return parseStat(stat)
}

// parseStat reads utime, stime and rss from a /proc/PID/stat line.
func parseStat(stat []byte) (Usage, error) {
	// The command name (field 2) may hold spaces; fields after it are plain.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Usage{}, fmt.Errorf("parse /proc stat: no ')' in %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime=14, stime=15, rss=24 (pages).
	if len(f) < 22 {
		return Usage{}, fmt.Errorf("parse /proc stat: %d fields after the name", len(f))
	}
	num := func(field int) (int64, error) {
		v, err := strconv.ParseInt(f[field-3], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc stat field %d: %w", field, err)
		}
		return v, nil
	}
	utime, err := num(14)
	if err != nil {
		return Usage{}, err
	}
	stime, err := num(15)
	if err != nil {
		return Usage{}, err
	}
	rss, err := num(24)
	if err != nil {
		return Usage{}, err
	}
	return Usage{RSS: rss * int64(os.Getpagesize()), CPU: time.Duration(utime+stime) * procstat.ClockTick}, nil
}

// MachineBusy reads the CPU time all processors have spent busy since
// boot (user, nice, system, irq, softirq, steal) from /proc/stat.
func MachineBusy() (time.Duration, error) {
	c, err := procstat.ReadCPU()
	return c.Busy(), err
}

// KernelSlab reads the kernel's slab memory (Slab of /proc/meminfo, in
// bytes): sockets, pipes and their buffers live there, outside any RSS.
func KernelSlab() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("kernel slab: %w", err)
	}
	return parseMeminfo(b, "Slab")
}

// parseMeminfo returns the value of key in a /proc/meminfo text, in bytes.
func parseMeminfo(meminfo []byte, key string) (int64, error) {
	for _, line := range strings.Split(string(meminfo), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse /proc/meminfo %s: %q", key, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/meminfo %s: %w", key, err)
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("parse /proc/meminfo: no %s", key)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, and
// free for UDP too (memberlist binds both). Another process could take it
// before the child binds it; the child then fails to start and says so.
func FreePort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		pc.Close()
		return port, nil
	}
	return 0, errors.New("free port: no port free for both TCP and UDP after 20 tries")
}
