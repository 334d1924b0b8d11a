// Command vipctl is the operator CLI of vipd. It talks to a node's admin
// API only (validate and keygen work offline).
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vipd/vipd/config"
)

const usage = `usage: vipctl [--admin HOST:PORT] COMMAND [ARGS]

commands:
  status [--json]               the node's view: leadership, VIPs, members, pools
  drain POOL BACKEND            stop new connections to a backend (cluster-wide)
  undrain POOL BACKEND          put it back in rotation
  transfer                      hand leadership to another node
  maintenance NODE on|off       a node in maintenance never leads
  leave                         the node hands over, leaves the cluster and stops
  remove NAME                   remove a crashed node from the voter set
  reload                        apply the node's config file live (as SIGHUP)
  validate FILE                 check a config file without running it
  keygen                        print a new cluster key for secret_file
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	admin := fs.String("admin", envOr("VIPD_ADMIN", config.DefaultAdminListen), "admin API address of a vipd node (env VIPD_ADMIN)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := &client{base: "http://" + *admin, http: &http.Client{Timeout: *timeout}}
	cmd, rest := fs.Arg(0), fs.Args()
	if len(rest) > 0 {
		rest = rest[1:]
	}
	err := dispatch(c, cmd, rest, stdout)
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vipctl: %v\n\n%s", err, usage)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "vipctl: %v\n", err)
		return 1
	}
	return 0
}

type usageError string

func (e usageError) Error() string { return string(e) }

func want(args []string, n int, form string) error {
	if len(args) != n {
		return usageError("expected: vipctl " + form)
	}
	return nil
}

func dispatch(c *client, cmd string, args []string, out io.Writer) error {
	switch cmd {
	case "status":
		if len(args) == 1 && args[0] == "--json" {
			return c.get("/status", out)
		}
		if err := want(args, 0, "status [--json]"); err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := c.get("/status", &buf); err != nil {
			return err
		}
		return printStatus(buf.Bytes(), out)
	case "drain", "undrain":
		if err := want(args, 2, cmd+" POOL BACKEND"); err != nil {
			return err
		}
		return c.post("/v1/"+cmd, map[string]any{"pool": args[0], "backend": args[1]}, out)
	case "transfer", "leave":
		if err := want(args, 0, cmd); err != nil {
			return err
		}
		return c.post("/v1/"+cmd, nil, out)
	case "reload":
		if err := want(args, 0, "reload"); err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := c.post("/v1/reload", nil, &buf); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		var res struct {
			Result string `json:"result"`
			Digest string `json:"config_digest"`
		}
		if err := json.Unmarshal(buf.Bytes(), &res); err != nil {
			return fmt.Errorf("decode reload answer: %w", err)
		}
		fmt.Fprintf(out, "reload %s: running config %s\n", res.Result, res.Digest)
		return nil
	case "remove":
		if err := want(args, 1, "remove NAME"); err != nil {
			return err
		}
		return c.post("/v1/remove", map[string]any{"name": args[0]}, out)
	case "maintenance":
		if err := want(args, 2, "maintenance NODE on|off"); err != nil {
			return err
		}
		if args[1] != "on" && args[1] != "off" {
			return usageError(fmt.Sprintf("maintenance: %q is neither on nor off", args[1]))
		}
		return c.post("/v1/maintenance", map[string]any{"node": args[0], "on": args[1] == "on"}, out)
	case "validate":
		if err := want(args, 1, "validate FILE"); err != nil {
			return err
		}
		cfg, err := config.Load(args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: ok (node %s, %d frontends, %d pools, %d vips)\n", args[0], cfg.Node.Name, len(cfg.Frontends), len(cfg.Pools), len(cfg.VIPs))
		return nil
	case "keygen":
		key := make([]byte, 32)
		rand.Read(key)
		fmt.Fprintln(out, base64.StdEncoding.EncodeToString(key))
		return nil
	case "":
		return usageError("no command")
	}
	return usageError(fmt.Sprintf("unknown command %q", cmd))
}

type client struct {
	base string
	http *http.Client
}

func (c *client) get(path string, out io.Writer) error {
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return copyResponse(resp, out)
}

func (c *client) post(path string, body any, out io.Writer) error {
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	resp, err := c.http.Post(c.base+path, "application/json", bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	return copyResponse(resp, out)
}

// copyResponse prints a success body, or turns the admin API's
// {"error": "..."} into the command's error.
func copyResponse(resp *http.Response, out io.Writer) error {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	_, err = out.Write(body)
	return err
}

// statusView is the part of /status that the table shows.
type statusView struct {
	Node, State, Leader string
	Term                uint64
	Ready               bool
	Digest              string `json:"config_digest"`
	VIPs                []struct {
		Address, Interface string
		Held               bool
	}
	Members []struct {
		Name     string
		RaftAddr string `json:"raft_addr"`
		Role     string
		Voter    bool
		Alive    bool
		Healthy  int `json:"healthy_pools"`
		Pools    int
		Digest   string `json:"config_digest"`
	}
	Pools []struct {
		Name     string
		Backends []struct {
			Address   string
			Healthy   bool
			Drained   bool
			Weight    int
			Active    int64  `json:"active_connections"`
			Total     uint64 `json:"total_connections"`
			LastCheck string `json:"last_check"`
		}
	}
}

func printStatus(data []byte, out io.Writer) error {
	var s statusView
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("decode status: %w", err)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "node %s\tstate %s\tleader %s\tterm %d\tready %t\n\n", s.Node, s.State, s.Leader, s.Term, s.Ready)
	if len(s.VIPs) > 0 {
		fmt.Fprintln(tw, "VIP\tINTERFACE\tHELD HERE")
		for _, v := range s.VIPs {
			fmt.Fprintf(tw, "%s\t%s\t%t\n", v.Address, v.Interface, v.Held)
		}
		fmt.Fprintln(tw)
	}
	leaderDigest := ""
	for _, m := range s.Members {
		if m.Name == s.Leader {
			leaderDigest = m.Digest
		}
	}
	fmt.Fprintln(tw, "MEMBER\tRAFT\tROLE\tVOTER\tALIVE\tHEALTHY POOLS\tCONFIG")
	for _, m := range s.Members {
		config := m.Digest
		if leaderDigest != "" && m.Digest != leaderDigest {
			config += " (differs from the leader's)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%t\t%d/%d\t%s\n", m.Name, m.RaftAddr, m.Role, m.Voter, m.Alive, m.Healthy, m.Pools, config)
	}
	for _, p := range s.Pools {
		fmt.Fprintf(tw, "\nPOOL %s\tHEALTHY\tDRAINED\tWEIGHT\tACTIVE\tTOTAL\tLAST CHECK\n", p.Name)
		for _, b := range p.Backends {
			fmt.Fprintf(tw, "%s\t%t\t%t\t%d\t%d\t%d\t%s\n", b.Address, b.Healthy, b.Drained, b.Weight, b.Active, b.Total, b.LastCheck)
		}
	}
	return tw.Flush()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
