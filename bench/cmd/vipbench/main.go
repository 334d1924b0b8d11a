// Command vipbench measures vipd side by side with HAProxy and a direct
// connection on 127.0.0.1: bulk upload throughput, new connections per
// second and request/response pairs per second with latency, and the memory
// idle connections cost. It prints a table of medians over interleaved
// rounds. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vipd/vipd/bench"
)

func main() { os.Exit(run()) }

func run() int {
	var (
		duration    = flag.Duration("duration", 2500*time.Millisecond, "length of each timed run")
		rounds      = flag.Int("rounds", 5, "rounds; each runs every metric through every target")
		only        = flag.String("only", "", "comma-separated metrics to run: "+strings.Join(bench.AllMetrics, ",")+" (default all)")
		targets     = flag.String("targets", "", "comma-separated targets: "+strings.Join(bench.AllTargets, ",")+" (default all)")
		concurrency = flag.Int("concurrency", 16, "workers of the connection-rate run and connections of the pairs run")
		idle        = flag.Int("idle", 10000, "idle connections held open for the memory figure")
		idleSettle  = flag.Duration("idle-settle", 5*time.Second, "how long the idle connections are held before the memory figure is read")
		haproxyBin  = flag.String("haproxy", "haproxy", "haproxy binary")
		nginxBin    = flag.String("nginx", "nginx", "nginx binary: the real peer's server (peer, peerclose)")
		wrkBin      = flag.String("wrk", "wrk", "wrk binary: the real peer's client (peer, peerclose)")
		vipdBin     = flag.String("vipd", "bin/vipd", "vipd binary")
		splice      = flag.Bool("haproxy-splice", false, "add 'option splice-auto' to HAProxy (Debian's default config has no splicing)")
		keep        = flag.Bool("keep", false, "keep the scratch directory (configs, logs) and print its path")
		out         = flag.String("out", "", "also write the report to this file")
		vipdEnv     envList
		builds      buildList
	)
	flag.Var(&builds, "compare", "NAME=PATH: also measure another vipd binary as target NAME, repeatable (compare variants in one run)")
	flag.Var(&vipdEnv, "vipd-env", "KEY=value added to vipd's environment, repeatable (e.g. GOMAXPROCS=1, GODEBUG=...)")
	flag.Parse()
	if flag.NArg() > 0 || *rounds < 1 || *duration <= 0 || *concurrency < 1 || *idle < 1 || *idleSettle < 0 {
		fmt.Fprintln(os.Stderr, "vipbench: bad arguments: -rounds, -duration, -concurrency, -idle must be positive, -idle-settle not negative; no positional arguments")
		flag.Usage()
		return 2
	}
	metrics, err := bench.ParseList("only", *only, bench.AllMetrics)
	if err == nil {
		var ts []string
		ts, err = bench.ParseList("targets", *targets, bench.AllTargets)
		*targets = strings.Join(ts, ",")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vipbench:", err)
		return 2
	}
	targetList := strings.Split(*targets, ",")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if slices.Contains(targetList, "haproxy") {
		p, err := lookPath(*haproxyBin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vipbench: haproxy not found (%v): install it with `apt-get install haproxy`, or leave it out with -targets direct,vipd\n", err)
			return 1
		}
		*haproxyBin = p
	} else {
		*haproxyBin = ""
	}
	if slices.Contains(metrics, bench.MetricPeerKeepAlive) || slices.Contains(metrics, bench.MetricPeerClose) {
		for _, bin := range []*string{nginxBin, wrkBin} {
			p, err := lookPath(*bin)
			if err != nil {
				fmt.Fprintf(os.Stderr, "vipbench: %s not found (%v): the real-peer metrics need it; install with `apt-get install nginx wrk` (sudo make bench does), or leave them out with -only\n", *bin, err)
				return 1
			}
			*bin = p
		}
	}
	if slices.Contains(targetList, "vipd") {
		if st, err := os.Stat(*vipdBin); err != nil || st.IsDir() {
			fmt.Fprintf(os.Stderr, "vipbench: vipd binary %q not found: run `make build` first, or leave it out with -targets direct,haproxy\n", *vipdBin)
			return 1
		}
	} else {
		*vipdBin = ""
	}

	// Each proxied connection costs this process two descriptors (client
	// and backend side) and a proxy two: vipd holds no splice pipe while a
	// connection is idle. The children inherit the limit; without
	// CAP_SYS_RESOURCE it cannot pass the hard limit (20,000 here), so the
	// idle run opens as many connections as fit in it.
	const fdsPerConn, fdsReserve = 2, 1000
	limit, err := bench.RaiseNoFile(uint64(fdsPerConn**idle + fdsReserve))
	if err != nil {
		fmt.Fprintln(os.Stderr, "vipbench:", err)
		return 1
	}
	// HAProxy reserves descriptors for maxconn connections (two each) and,
	// with splicing, maxconn/4 pipes (two each) on top, and refuses to start
	// when the limit is lower.
	maxConn := (int(limit) - fdsReserve) / fdsPerConn
	if *splice {
		maxConn = (int(limit) - fdsReserve) * 2 / 5
	}
	maxConn = min(200000, maxConn)
	if *idle > maxConn && slices.Contains(metrics, bench.MetricIdle) {
		fmt.Fprintf(os.Stderr, "vipbench: open-file limit %d allows only %d idle connections; using that (the figure is scaled to 10k)\n", limit, maxConn)
		*idle = maxConn
	}

	dir, err := os.MkdirTemp("", "vipbench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "vipbench: scratch dir:", err)
		return 1
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "vipbench: scratch dir kept:", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	info := bench.MachineInfo(ctx, *haproxyBin, *vipdBin)
	fmt.Fprintln(os.Stderr, "machine:", info)
	start := time.Now()
	rep, runErr := bench.Run(ctx, bench.Options{
		Duration: *duration, Rounds: *rounds, Metrics: metrics, Targets: targetList,
		Concurrency: *concurrency, IdleConns: *idle, IdleSettle: *idleSettle,
		HAProxyBin: *haproxyBin, VipdBin: *vipdBin, NginxBin: *nginxBin, WrkBin: *wrkBin, VipdEnv: vipdEnv, Builds: builds, HAProxySplice: *splice, MaxConn: maxConn,
		Dir: dir, Progress: os.Stderr,
	})
	if rep != nil {
		w := io.Writer(os.Stdout)
		var f *os.File
		if *out != "" {
			if f, err = os.Create(*out); err != nil {
				fmt.Fprintln(os.Stderr, "vipbench: -out:", err)
				return 1
			}
			w = io.MultiWriter(os.Stdout, f)
		}
		setup := fmt.Sprintf("medians of %d interleaved rounds, %s per run, concurrency %d, bulk = client uploads to a sink, haproxy splice %v",
			*rounds, *duration, *concurrency, *splice)
		if len(vipdEnv) > 0 {
			setup += ", vipd env " + vipdEnv.String()
		}
		if len(builds) > 0 {
			setup += ", other vipd builds " + builds.String()
		}
		err = writeReport(w, rep, setup, info, time.Since(start))
		if f != nil {
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "vipbench: write report:", err)
			return 1
		}
	}
	if runErr != nil {
		fmt.Fprintln(os.Stderr, "vipbench:", runErr)
		return 1
	}
	return 0
}

// lookPath finds bin on PATH or, for a bare name, in /usr/sbin, where
// Debian installs haproxy and nginx and which a user's PATH often lacks.
func lookPath(bin string) (string, error) {
	p, err := exec.LookPath(bin)
	if err == nil || strings.Contains(bin, "/") {
		return p, err
	}
	if p, serr := exec.LookPath("/usr/sbin/" + bin); serr == nil {
		return p, nil
	}
	return "", err
}

// buildList collects repeated -compare NAME=PATH flags.
type buildList []bench.Build

func (l *buildList) String() string {
	var s []string
	for _, b := range *l {
		s = append(s, b.Name+"="+b.Bin)
	}
	return strings.Join(s, " ")
}

func (l *buildList) Set(v string) error {
	name, bin, ok := strings.Cut(v, "=")
	if !ok || name == "" || bin == "" || strings.ContainsAny(name, " |/") {
		return fmt.Errorf("want NAME=PATH with a plain NAME, got %q", v)
	}
	if slices.Contains(bench.AllTargets, name) || slices.ContainsFunc(*l, func(b bench.Build) bool { return b.Name == name }) {
		return fmt.Errorf("target name %q is taken", name)
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return fmt.Errorf("%s: not a file", bin)
	}
	*l = append(*l, bench.Build{Name: name, Bin: bin})
	return nil
}

// envList collects repeated KEY=value flags.
type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }

func (e *envList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("want KEY=value, got %q", v)
	}
	*e = append(*e, v)
	return nil
}

// writeReport writes the heading (setup and machine), the table of
// medians, every run's values and the warnings.
func writeReport(w io.Writer, rep *bench.Report, setup, info string, took time.Duration) error {
	var b strings.Builder
	fmt.Fprintf(&b, "vipbench %s: %s; took %s\n", time.Now().UTC().Format(time.RFC3339), setup, took.Round(time.Second))
	fmt.Fprintf(&b, "machine: %s\n\n", info)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := bench.RenderTable(w, rep.Targets, rep.Rows); err != nil {
		return err
	}
	if _, err := io.WriteString(w, "\nper round (run order):\n"); err != nil {
		return err
	}
	if err := bench.RenderRounds(w, rep.Targets, rep.Rows); err != nil {
		return err
	}
	if len(rep.Warnings) > 0 {
		if _, err := fmt.Fprintf(w, "\nwarnings:\n  %s\n", strings.Join(rep.Warnings, "\n  ")); err != nil {
			return err
		}
	}
	return nil
}
