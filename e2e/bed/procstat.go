package bed

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vipd/vipd/internal/procstat"
)

// Usage is what a process's threads got from the kernel's scheduler: the CPU
// time they ran, and how long they were runnable but waited for a CPU
// (/proc/PID/task/TID/schedstat). Threads that have exited no longer count;
// Go keeps its threads.
type Usage struct {
	CPU     time.Duration // ran on a CPU
	Waited  time.Duration // runnable, waiting on a run queue
	Slices  int64         // times a thread was put on a CPU
	Threads int
}

// Sub is the usage between an earlier reading and u.
func (u Usage) Sub(earlier Usage) Usage {
	return Usage{CPU: u.CPU - earlier.CPU, Waited: u.Waited - earlier.Waited, Slices: u.Slices - earlier.Slices, Threads: u.Threads}
}

// WaitPerSlice is the mean wait for a CPU before each run of a thread.
func (u Usage) WaitPerSlice() time.Duration {
	if u.Slices == 0 {
		return 0
	}
	return u.Waited / time.Duration(u.Slices)
}

// Usage reads the process's scheduler statistics.
func (p *Proc) Usage() (Usage, error) {
	dir := "/proc/" + strconv.Itoa(p.Pid()) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %s: %w", p.Name, err)
	}
	var u Usage
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread has just exited
		}
		f := strings.Fields(string(b))
		if len(f) != 3 {
			return Usage{}, fmt.Errorf("usage of %s: schedstat %q", p.Name, b)
		}
		var v [3]int64
		for i := range v {
			if v[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
				return Usage{}, fmt.Errorf("usage of %s: schedstat %q: %w", p.Name, b, err)
			}
		}
		u.CPU += time.Duration(v[0])
		u.Waited += time.Duration(v[1])
		u.Slices += v[2]
		u.Threads++
	}
	return u, nil
}

// MachineCPU is the machine's CPU time by kind since boot (/proc/stat), and
// how long some task stalled on CPU, memory or I/O (pressure stall
// information, /proc/pressure; zero without it).
type MachineCPU struct {
	Busy, SoftIRQ, Steal, Idle time.Duration
	Stall                      [3]time.Duration // cpu, memory, io: "some" totals
}

// ReadMachineCPU reads the machine's CPU times and its pressure stalls.
func ReadMachineCPU() (MachineCPU, error) {
	c, err := procstat.ReadCPU()
	if err != nil {
		return MachineCPU{}, err
	}
	m := MachineCPU{Busy: c.Busy(), SoftIRQ: c.SoftIRQ, Steal: c.Steal, Idle: c.Idle + c.IOWait}
	for i, res := range []string{"cpu", "memory", "io"} {
		if m.Stall[i], err = readStall("/proc/pressure/" + res); err != nil {
			return MachineCPU{}, err
		}
	}
	return m, nil
}

// readStall returns the "some" total of a pressure file; 0 when the kernel
// has none.
func readStall(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pressure: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "some ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				us, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("pressure %s: %q: %w", path, line, err)
				}
				return time.Duration(us) * time.Microsecond, nil
			}
		}
	}
	return 0, fmt.Errorf("pressure %s: no some total in %q", path, b)
}

// Sub is the CPU time between an earlier reading and m.
func (m MachineCPU) Sub(earlier MachineCPU) MachineCPU {
	d := MachineCPU{Busy: m.Busy - earlier.Busy, SoftIRQ: m.SoftIRQ - earlier.SoftIRQ, Steal: m.Steal - earlier.Steal, Idle: m.Idle - earlier.Idle}
	for i := range d.Stall {
		d.Stall[i] = m.Stall[i] - earlier.Stall[i]
	}
	return d
}
