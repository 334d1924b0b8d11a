// Command vipctl is the operator CLI of vipd. It talks to a node's admin
// API only (validate and keygen work offline).
package main

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
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

const usage = `usage: vipctl [--admin HOST:PORT|URL] [--token-file FILE] [--cacert FILE] [--cert FILE --key FILE] COMMAND [ARGS]

commands:
  status [--json]               the node's view: leadership, VIPs, members, pools
  drain POOL BACKEND            stop new connections to a backend (cluster-wide)
  undrain POOL BACKEND          put it back in rotation
  transfer                      hand leadership to another node
  maintenance NODE on|off       a node in maintenance never leads
  move VIP NODE                 hand a spread VIP over to NODE (planned, no wait for its lease)
  leave                         the node hands over, leaves the cluster and stops
  remove NAME                   remove a crashed node from the voter set
  reload                        apply the node's config file live (as SIGHUP)
  validate FILE                 check a config file without running it
  keygen                        print a new key: cluster.secret_file or admin.token_file

flags (each also from the environment variable named):
  --admin HOST:PORT|URL         a node's admin API (VIPD_ADMIN; default 127.0.0.1:9900);
                                https://HOST:PORT, or any of the TLS flags, speaks TLS
  --token-file FILE             bearer token, as in the node's admin.token_file (VIPD_TOKEN_FILE)
  --cacert FILE                 CA that signed the node's admin.tls certificate (VIPD_CACERT)
  --cert FILE, --key FILE       client certificate for admin.tls.client_ca_file (VIPD_CERT, VIPD_KEY)
  --timeout DURATION            how long to wait for the node (default 10s)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	var o clientOptions
	fs.StringVar(&o.admin, "admin", envOr("VIPD_ADMIN", config.DefaultAdminListen), "admin API of a vipd node: HOST:PORT or http(s)://HOST:PORT (env VIPD_ADMIN)")
	fs.StringVar(&o.tokenFile, "token-file", os.Getenv("VIPD_TOKEN_FILE"), "file with the admin bearer token (env VIPD_TOKEN_FILE)")
	fs.StringVar(&o.caCert, "cacert", os.Getenv("VIPD_CACERT"), "CA of the node's admin TLS certificate; implies https (env VIPD_CACERT)")
	fs.StringVar(&o.cert, "cert", os.Getenv("VIPD_CERT"), "client certificate for admin mutual TLS; implies https (env VIPD_CERT)")
	fs.StringVar(&o.key, "key", os.Getenv("VIPD_KEY"), "key of --cert (env VIPD_KEY)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := newClient(o)
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
	case "move":
		if err := want(args, 2, "move VIP NODE"); err != nil {
			return err
		}
		return c.post("/v1/move", map[string]any{"vip": args[0], "node": args[1]}, out)
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

// clientOptions say how to reach and authenticate to a node's admin API.
type clientOptions struct {
	admin, tokenFile, caCert, cert, key string
	timeout                             time.Duration
}

type client struct {
	base  string // scheme://host:port
	http  *http.Client
	token string // sent as a bearer token when set
	err   error  // why the options do not make a client; returned by every call, so that validate and keygen still work
}

func newClient(o clientOptions) *client {
	c := &client{}
	c.err = c.setUp(o)
	return c
}

func (c *client) setUp(o clientOptions) error {
	useTLS := o.caCert != "" || o.cert != "" || o.key != ""
	switch scheme, rest, ok := strings.Cut(o.admin, "://"); {
	case !ok:
		c.base = "http://" + o.admin
		if useTLS {
			c.base = "https://" + o.admin
		}
	case scheme == "https" || scheme == "http" && !useTLS:
		c.base = scheme + "://" + strings.TrimSuffix(rest, "/")
	case scheme == "http":
		return fmt.Errorf("--admin %s is plain http, but --cacert, --cert or --key ask for TLS: use https://%s", o.admin, rest)
	default:
		return fmt.Errorf("--admin %s: the scheme must be http or https", o.admin)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if useTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.caCert != "" {
			pem, err := os.ReadFile(o.caCert)
			if err != nil {
				return fmt.Errorf("--cacert: %w", err)
			}
			if tc.RootCAs = x509.NewCertPool(); !tc.RootCAs.AppendCertsFromPEM(pem) {
				return fmt.Errorf("--cacert %s: no PEM certificate in it", o.caCert)
			}
		}
		if (o.cert == "") != (o.key == "") {
			return errors.New("--cert and --key go together")
		}
		if o.cert != "" {
			cert, err := tls.LoadX509KeyPair(o.cert, o.key)
			if err != nil {
				return fmt.Errorf("--cert %s, --key %s: %w", o.cert, o.key, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		transport.TLSClientConfig = tc
	}
	c.http = &http.Client{Timeout: o.timeout, Transport: transport}
	if o.tokenFile != "" {
		data, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		if c.token = strings.TrimSpace(string(data)); c.token == "" {
			return fmt.Errorf("--token-file %s is empty", o.tokenFile)
		}
	}
	return nil
}

func (c *client) get(path string, out io.Writer) error {
	return c.do("GET", path, nil, out)
}

func (c *client) post(path string, body any, out io.Writer) error {
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	return c.do("POST", path, data, out)
}

func (c *client) do(method, path string, body []byte, out io.Writer) error {
	if c.err != nil {
		return c.err
	}
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
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
		Holder             string // "" when no node holds it
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
		fmt.Fprintln(tw, "VIP\tINTERFACE\tHELD HERE\tHOLDER")
		for _, v := range s.VIPs {
			fmt.Fprintf(tw, "%s\t%s\t%t\t%s\n", v.Address, v.Interface, v.Held, cmp.Or(v.Holder, "none"))
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
