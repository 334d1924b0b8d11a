// Command vipsoak is a bounded soak of one proxy on 127.0.0.1: it holds
// -idle idle connections through it plus a steady stream of short ones for
// -duration, samples the proxy's RSS, descriptors and (vipd) goroutines,
// checks they stay flat in the steady phase and come back near their
// starting level once every connection is closed. The proxy (bin/vipd or
// haproxy) and the backend (this binary with -backend) run in processes of
// their own; the client is this process. See docs/benchmarks.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vipd/vipd/bench"
)

func main() { os.Exit(run()) }

func run() int {
	var (
		backendRole = flag.Bool("backend", false, "run as the backend: print the listen address, serve until stdin closes")
		target      = flag.String("target", "vipd", "vipd or haproxy")
		idle        = flag.Int("idle", 9000, "idle connections held through the proxy")
		duration    = flag.Duration("duration", 3*time.Minute, "length of the steady phase")
		rate        = flag.Int("rate", 200, "new short connections per second during the steady phase")
		every       = flag.Duration("sample", 2*time.Second, "sampling interval")
		vipdBin     = flag.String("vipd", "bin/vipd", "vipd binary")
		haproxyBin  = flag.String("haproxy", "haproxy", "haproxy binary")
	)
	flag.Parse()
	if *backendRole {
		return serveBackend()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := soak(ctx, *target, *vipdBin, *haproxyBin, *idle, *rate, *duration, *every); err != nil {
		fmt.Fprintln(os.Stderr, "vipsoak:", err)
		return 1
	}
	return 0
}

// serveBackend is the backend process: bench's backend on a free port.
func serveBackend() int {
	if _, err := bench.RaiseNoFile(20000); err != nil {
		fmt.Fprintln(os.Stderr, "vipsoak backend:", err)
	}
	b, err := bench.NewBackend("127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "vipsoak backend:", err)
		return 1
	}
	fmt.Println(b.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent holds stdin: EOF when it ends
	_ = b.Close()
	return 0
}

// sample is one reading of the proxy.
type sample struct {
	at         time.Duration
	rss        int64 // bytes
	fds        int
	goroutines int // -1 when the target does not say (haproxy)
}

func (s sample) String() string {
	return fmt.Sprintf("t=%5.0fs rss=%6.1f MiB fds=%6d goroutines=%6d", s.at.Seconds(), float64(s.rss)/(1<<20), s.fds, s.goroutines)
}

func soak(ctx context.Context, name, vipdBin, haproxyBin string, idle, rate int, duration, every time.Duration) error {
	if _, err := bench.RaiseNoFile(20000); err != nil {
		return err
	}
	backendAddr, stopBackend, err := startBackend(ctx)
	if err != nil {
		return err
	}
	defer stopBackend()
	dir, err := os.MkdirTemp("", "vipsoak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Headroom for the short stream; HAProxy wants 2×maxconn descriptors.
	maxConn := idle + 500
	var t *bench.Target
	switch name {
	case "vipd":
		t, err = bench.StartVipd(ctx, "vipd", vipdBin, dir, backendAddr, maxConn, nil, nil)
	case "haproxy":
		t, err = bench.StartHAProxy(ctx, haproxyBin, dir, backendAddr, false, maxConn, nil)
	default:
		err = fmt.Errorf("target %q: want vipd or haproxy", name)
	}
	if err != nil {
		return err
	}
	defer t.Stop()

	start := time.Now()
	read := func() (sample, error) {
		u, err := bench.ReadUsage(t.Proc.PID())
		if err != nil {
			return sample{}, err
		}
		fds, err := bench.OpenFiles(t.Proc.PID())
		if err != nil {
			return sample{}, err
		}
		g := -1
		if t.Admin != "" {
			if g, err = goroutines(ctx, t.Admin); err != nil {
				return sample{}, err
			}
		}
		return sample{at: time.Since(start), rss: u.RSS, fds: fds, goroutines: g}, nil
	}
	base, err := read()
	if err != nil {
		return err
	}
	fmt.Printf("%s start   %s\n", name, base)

	conns, err := bench.DialIdle(ctx, t.Addr, idle)
	defer func() { closeAll(conns) }()
	if err != nil {
		return err
	}
	// Both legs of every idle connection are open once the proxy holds two
	// descriptors for each, give or take the transient ones the start
	// sample may have caught.
	if err := waitUntil(ctx, time.Minute, func() bool {
		s, err := read()
		return err == nil && s.fds >= base.fds+2*idle-transientFDs
	}); err != nil {
		return fmt.Errorf("proxy never held %d idle connections: %w", idle, err)
	}
	loaded, _ := read()
	fmt.Printf("%s idle    %s  (%d idle connections: %.1f KiB RSS each)\n", name, loaded, idle,
		float64(loaded.rss-base.rss)/1024/float64(idle))

	streamCtx, stopStream := context.WithCancel(ctx)
	var made, failed atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() { stream(streamCtx, t.Addr, rate, &made, &failed) })
	var steady []sample
	tick := time.NewTicker(every)
	deadline := time.After(duration)
loop:
	for {
		select {
		case <-ctx.Done():
			stopStream()
			wg.Wait()
			return ctx.Err()
		case <-deadline:
			break loop
		case <-tick.C:
			s, err := read()
			if err != nil {
				stopStream()
				wg.Wait()
				return err
			}
			steady = append(steady, s)
			fmt.Printf("%s steady  %s  short connections %d (failed %d)\n", name, s, made.Load(), failed.Load())
		}
	}
	tick.Stop()
	stopStream()
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d short connections failed", f, made.Load())
	}

	if err := flat(steady); err != nil {
		return fmt.Errorf("steady phase not flat: %w", err)
	}
	closeAll(conns)
	conns = nil
	// Back near the start: every descriptor; for vipd also the goroutines
	// but the idle workers the balancer keeps (at most 64 per frontend), and
	// the RSS within half its growth to the peak or 16 MiB of the start,
	// whichever is more (Go's scavenger returns freed pages to the kernel
	// over minutes and keeps some heap). HAProxy keeps its memory pools: its
	// RSS is reported, not checked.
	vipd := t.Admin != ""
	peak := maxima(steady).rss
	rssBound := base.rss + max((peak-base.rss)/2, 16<<20)
	var end sample
	closed := time.Now()
	settled := waitUntil(ctx, 3*time.Minute, func() bool {
		s, err := read()
		end = s
		return err == nil && s.fds <= base.fds+transientFDs &&
			(!vipd || s.goroutines <= base.goroutines+64+8 && s.rss <= rssBound)
	})
	fmt.Printf("%s settled in %.0fs\n", name, time.Since(closed).Seconds())
	fmt.Printf("%s closed  %s\n", name, end)
	fmt.Printf("%s summary idle=%d short=%d steady_samples=%d rss_per_idle_kib=%.1f\n", name, idle, made.Load(), len(steady),
		float64(loaded.rss-base.rss)/1024/float64(idle))
	if settled != nil {
		return fmt.Errorf("after closing every connection: %s, started at %s: %w", end, base, settled)
	}
	return nil
}

// flat checks the steady phase is flat: the maxima of its second half are
// within a bound of its first half's. It is a leak check, not a
// performance threshold: a per-connection leak at the stream's rate grows
// far past these bounds within minutes.
func flat(steady []sample) error {
	if len(steady) < 4 {
		return fmt.Errorf("only %d steady samples: run longer", len(steady))
	}
	first, second := maxima(steady[:len(steady)/2]), maxima(steady[len(steady)/2:])
	var errs []error
	if second.rss > first.rss+first.rss/10+4<<20 {
		errs = append(errs, fmt.Errorf("RSS grew from %d to %d bytes", first.rss, second.rss))
	}
	if second.fds > first.fds+200 {
		errs = append(errs, fmt.Errorf("descriptors grew from %d to %d", first.fds, second.fds))
	}
	if second.goroutines > first.goroutines+200 {
		errs = append(errs, fmt.Errorf("goroutines grew from %d to %d", first.goroutines, second.goroutines))
	}
	return errors.Join(errs...)
}

func maxima(ss []sample) sample {
	var m sample
	for _, s := range ss {
		m.rss, m.fds, m.goroutines = max(m.rss, s.rss), max(m.fds, s.fds), max(m.goroutines, s.goroutines)
	}
	return m
}

// startBackend runs this binary as the backend and returns its address and
// a function that ends it.
func startBackend(ctx context.Context) (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-backend")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start backend: %w", err)
	}
	stopFn := func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stopFn()
		return "", nil, fmt.Errorf("backend address: %w", err)
	}
	return strings.TrimSpace(line), stopFn, nil
}

// goroutines reads go_goroutines from vipd's /metrics.
func goroutines(ctx context.Context, admin string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("metrics: no go_goroutines (%v)", sc.Err())
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// stream opens rate short request/reply connections per second until ctx
// ends.
// transientFDs is how many descriptors a proxy opens and closes without a
// client connection (a health check's socket, a pooled splice pipe): a
// sample may catch them or not.
const transientFDs = 4

func stream(ctx context.Context, addr string, rate int, made, failed *atomic.Int64) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		made.Add(1)
		wg.Go(func() {
			if err := bench.ConnOnce(ctx, addr); err != nil && ctx.Err() == nil {
				failed.Add(1)
				fmt.Fprintln(os.Stderr, "vipsoak: short connection:", err)
			}
		})
	}
}

// waitUntil polls cond every 200ms until it holds or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}
