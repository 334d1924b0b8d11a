package bed

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// Sched ranks a process against the others on the machine. The bed's
// processes share one session, hence one scheduling autogroup, unless
// started with a Sched: then the process gets a session of its own, whose
// autogroup competes with every other one (other sessions, other test runs)
// at GroupNice, and its threads run at Nice inside it.
//
// That is how the systemd unit ranks vipd: Nice= for its threads, CPUWeight=
// for its cgroup against the other services. With the CPU controller at the
// root (autogroups in use) a session's autogroup is what a service's cgroup
// is under systemd, and GroupNice carries CPUWeight (see UnitSched).
type Sched struct {
	Nice      int // nice(1) of every thread, as systemd's Nice=
	GroupNice int // the autogroup's nice, as systemd's CPUWeight=
}

// applyGroup sets the autogroup nice of pid's session. A kernel without
// autogroups has no such file: cgroups then decide, and nothing is changed.
func (s Sched) applyGroup(pid int) error {
	path := fmt.Sprintf("/proc/%d/autogroup", pid)
	err := os.WriteFile(path, []byte(strconv.Itoa(s.GroupNice)), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("autogroup nice %d of %d: %w", s.GroupNice, pid, err)
	}
	return nil
}

// UnitSched reads Nice= and CPUWeight= from a systemd unit file (missing:
// 0 and systemd's default weight 100) and returns the Sched that ranks a
// process the same way: Nice as is, and the autogroup nice whose CFS weight
// is CPUWeight/100 times the default one's (each nice step is a factor of
// about 1.25).
func UnitSched(path string) (Sched, error) {
	f, err := os.Open(path)
	if err != nil {
		return Sched{}, fmt.Errorf("read unit %s: %w", path, err)
	}
	defer f.Close()
	s, weight := Sched{}, 100
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || (k != "Nice" && k != "CPUWeight") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		switch {
		case err != nil:
			return Sched{}, fmt.Errorf("unit %s line %d: %s=%q: %w", path, line, k, v, err)
		case k == "Nice" && (n < -20 || n > 19):
			return Sched{}, fmt.Errorf("unit %s line %d: Nice=%d: want -20..19", path, line, n)
		case k == "CPUWeight" && (n < 1 || n > 10000):
			return Sched{}, fmt.Errorf("unit %s line %d: CPUWeight=%d: want 1..10000", path, line, n)
		case k == "Nice":
			s.Nice = n
		default:
			weight = n
		}
	}
	if err := sc.Err(); err != nil {
		return Sched{}, fmt.Errorf("read unit %s: %w", path, err)
	}
	g := -math.Round(math.Log(float64(weight)/100) / math.Log(1.25))
	s.GroupNice = int(max(-20, min(19, g)))
	return s, nil
}
