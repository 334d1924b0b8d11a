// Package procstat reads the machine's CPU time by kind from /proc/stat,
// for the tools that judge a run by it: the benchmarks, the e2e bed and
// the tests that tell the host's freezes from the machine's own load.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTick is USER_HZ, the unit of /proc/stat and /proc/PID/stat times:
// 100 a second on every Linux architecture Go supports.
const ClockTick = 10 * time.Millisecond

// CPU is the time all processors together have spent in each state since
// boot: the first line of /proc/stat.
type CPU struct {
	User, Nice, System, Idle, IOWait, IRQ, SoftIRQ time.Duration
	// Steal is time a virtual CPU was ready to run but its hypervisor ran
	// something else.
	Steal time.Duration
}

// Busy is the time the processors did work or had it taken by the host:
// everything but idle and I/O wait.
func (c CPU) Busy() time.Duration {
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
}

// ReadCPU reads the machine's CPU times.
func ReadCPU() (CPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPU{}, fmt.Errorf("machine cpu: %w", err)
	}
	return ParseCPU(b)
}

// ParseCPU parses the "cpu" line that opens a /proc/stat.
func ParseCPU(stat []byte) (CPU, error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return CPU{}, fmt.Errorf("machine cpu: first line of /proc/stat %q", line)
	}
	var c CPU
	for i, field := range []*time.Duration{&c.User, &c.Nice, &c.System, &c.Idle, &c.IOWait, &c.IRQ, &c.SoftIRQ, &c.Steal} {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return CPU{}, fmt.Errorf("machine cpu: /proc/stat field %d %q: %w", i+1, f[i+1], err)
		}
		*field = time.Duration(n) * ClockTick
	}
	return c, nil
}
