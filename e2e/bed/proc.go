package bed

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Proc is a process started inside a host's namespace with `ip netns exec`
// (which execs the command, so the pid is the command's own). Its stdout and
// stderr go to LogPath.
type Proc struct {
	Name    string // label, also the log file's base name
	Host    *Host
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
	err  error         // exit status, valid after done
}

// Start runs argv in host's namespace. name labels the process (unique per bed;
// a restart of the same daemon appends to the same log). The process gets
// SIGKILL if the test binary dies (Pdeathsig), so a crashed run leaves no
// daemons behind.
func (b *Bed) Start(host *Host, name string, argv ...string) (*Proc, error) {
	return b.StartWith(host, name, ProcOptions{}, argv...)
}

// ProcOptions adjust how StartWith runs a process.
type ProcOptions struct {
	Env   []string // added to the test's environment
	Sched *Sched   // nil: the test's own session and priority
}

// StartWith is Start with options: extra environment, and a scheduling rank
// (its own session, so its own autogroup, with the given nice values).
func (b *Bed) StartWith(host *Host, name string, o ProcOptions, argv ...string) (*Proc, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("bed closed")
	}
	logPath := filepath.Join(b.LogDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log for %s: %w", name, err)
	}
	fmt.Fprintf(f, "=== %s start in %s: %q env %q sched %+v\n", time.Now().Format("15:04:05.000"), host.NS, argv, o.Env, o.Sched)
	args := []string{"netns", "exec", host.NS}
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if o.Sched != nil {
		// nice execs the command, so the pid stays the command's and every
		// thread it makes inherits the nice value, as systemd's Nice= does.
		args = append(args, "nice", "-n", strconv.Itoa(o.Sched.Nice))
		attr.Setpgid, attr.Setsid = false, true // a session leader leads its own process group
	}
	cmd := exec.Command("ip", append(args, argv...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = attr
	if len(o.Env) > 0 {
		cmd.Env = append(os.Environ(), o.Env...)
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, host.NS, err)
	}
	p := &Proc{Name: name, Host: host, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	b.procs = append(b.procs, p)
	if o.Sched != nil {
		if err := o.Sched.applyGroup(cmd.Process.Pid); err != nil {
			p.Kill()
			return nil, fmt.Errorf("start %s in %s: %w", name, host.NS, err)
		}
	}
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process (not its children).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("signal %s: %s already exited", sig, p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, p.Name, err)
	}
	return nil
}

// Kill sends SIGKILL to the process group (the command and anything it
// forked), ignoring a process that is already gone.
func (p *Proc) Kill() {
	if !p.Exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Exited reports whether the process has ended and been reaped.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to end and returns its exit error
// (nil for status 0).
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// CPUTime is the user and system CPU time the process used, known once it
// has ended (false before).
func (p *Proc) CPUTime() (time.Duration, bool) {
	if !p.Exited() {
		return 0, false
	}
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime(), true
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Tail returns the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", p.LogPath, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// procList returns every process the bed has started, in start order.
func (b *Bed) procList() []*Proc {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*Proc(nil), b.procs...)
}

// Tails returns the last n log lines of every process the bed started, one
// block per distinct log file, for printing when a test fails.
func (b *Bed) Tails(n int) string {
	var buf bytes.Buffer
	seen := map[string]bool{}
	for _, p := range b.procList() {
		if seen[p.LogPath] {
			continue
		}
		seen[p.LogPath] = true
		fmt.Fprintf(&buf, "----- %s (%s) -----\n%s\n", p.Name, p.LogPath, p.Tail(n))
	}
	return buf.String()
}
