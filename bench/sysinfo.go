package bench

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
)

// MachineInfo describes where the figures were measured, in one line.
func MachineInfo(ctx context.Context, haproxyBin, vipdBin string) string {
	parts := []string{
		fmt.Sprintf("nproc=%d", runtime.NumCPU()),
		fmt.Sprintf("cpu=%q", cpuModel()),
		"kernel=" + readTrim("/proc/sys/kernel/osrelease"),
		"go=" + runtime.Version(),
	}
	if vipdBin != "" {
		if bi, err := buildinfo.ReadFile(vipdBin); err == nil {
			parts = append(parts, "vipd-go="+bi.GoVersion)
		}
	}
	if haproxyBin != "" {
		parts = append(parts, fmt.Sprintf("haproxy=%q", haproxyVersion(ctx, haproxyBin)))
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		parts = append(parts, fmt.Sprintf("nofile=%d", rl.Cur))
	}
	parts = append(parts,
		"tcp_tw_reuse="+readTrim("/proc/sys/net/ipv4/tcp_tw_reuse"),
		"ports="+strings.ReplaceAll(readTrim("/proc/sys/net/ipv4/ip_local_port_range"), "\t", "-"))
	return strings.Join(parts, " ")
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// haproxyVersion is the first line of "haproxy -v".
func haproxyVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "-v").Output()
	if err != nil {
		return "unknown: " + err.Error()
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// RaiseNoFile lifts the open-file limit to at least want (root may raise
// the hard limit; others get the hard limit) and returns the new soft
// limit. Children inherit it: haproxy and vipd hold two descriptors per
// proxied connection, the benchmark two per connection too.
func RaiseNoFile(want uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit nofile: %w", err)
	}
	if rl.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return want, nil
		}
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("setrlimit nofile %d: %w", rl.Cur, err)
	}
	return rl.Cur, nil
}
