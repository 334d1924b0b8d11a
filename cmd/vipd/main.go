// Command vipd is the floating-IP load balancer daemon: an L4 TCP proxy
// with health checks on every node, and a VIP held by the Raft leader.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/election"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, so that tests can drive the flags.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path of the YAML config file (empty: the embedded single-node default)")
	check := fs.Bool("check", false, "validate the config, read the admin credentials it names, and exit")
	printDefault := fs.Bool("print-default", false, "print the embedded single-node config and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vipd: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if *printDefault {
		stdout.Write(config.DefaultYAML())
		return 0
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return 1
	}
	if *check {
		if _, err := newAdminAuth(cfg.Admin, zap.NewNop(), prometheus.NewRegistry()); err != nil {
			fmt.Fprintf(stderr, "vipd: %v\n", err)
			return 1
		}
		// What the election refuses at start (a node name too long for
		// gossip, say) fails the check too; New starts nothing.
		if _, err := election.New(electionOptions(cfg)); err != nil {
			fmt.Fprintf(stderr, "vipd: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "config ok: node %s, %d frontends, %d pools, %d vips\n",
			cfg.Node.Name, len(cfg.Frontends), len(cfg.Pools), len(cfg.VIPs))
		return 0
	}
	level, err := zap.ParseAtomicLevel(cfg.Log.Level)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: log.level: %v\n", err)
		return 1
	}
	log, err := newLogger(cfg.Log, level, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: logger: %v\n", err)
		return 1
	}
	defer log.Sync()

	// Caught before anything is built: Go's default for SIGHUP is to exit
	// at once, which would leave the VIP behind until its lifetime ends.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d, err := newDaemon(cfg, *configPath, log, &level)
	if err != nil {
		log.Error("start", zap.Error(err))
		return 1
	}
	d.hup = hup
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := d.run(ctx); err != nil {
		log.Error("vipd failed", zap.Error(err))
		return 1
	}
	return 0
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// newLogger writes to out at level, which a reload may change.
func newLogger(c config.Log, level zap.AtomicLevel, out io.Writer) (*zap.Logger, error) {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch c.Format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, errors.New("log.format must be json or console")
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(out), level)), nil
}
