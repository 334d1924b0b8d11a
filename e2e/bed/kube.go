package bed

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ServiceClusterRange is the control plane's ClusterIP range, inside the
// test addresses (198.18.0.0/15) and apart from the bed's bridge subnet.
const ServiceClusterRange = "198.19.0.0/16"

// Ports of the control plane on its host.
const (
	etcdClientPort = 2379
	etcdPeerPort   = 2380
	apiServerPort  = 6443
)

// ControlPlane is a real Kubernetes control plane in one host of the bed:
// etcd and kube-apiserver, built from their Go modules (`make kube-tools`,
// tools/), no kubelet. Tests create Services and EndpointSlices through it
// with Do; Kubeconfig lets a client (vipd, kubectl) reach it from any host.
type ControlPlane struct {
	Kubeconfig string // admin credentials, server https://HOST:6443, its self-signed certificate not checked
	url        string
	binDir     string
	token      string
	client     *http.Client
	etcd, api  *Proc
}

// StartControlPlane starts etcd and kube-apiserver from binDir in host,
// with their state and credentials under dir, and waits until the API
// server's /readyz answers ok (it migrates its storage first).
func (b *Bed) StartControlPlane(ctx context.Context, host *Host, binDir, dir string) (*ControlPlane, error) {
	for _, bin := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(binDir, bin)); err != nil {
			return nil, fmt.Errorf("control plane: %w (make kube-tools builds it)", err)
		}
	}
	token, err := writeCredentials(dir)
	if err != nil {
		return nil, fmt.Errorf("control plane credentials: %w", err)
	}
	addr := host.Addr.String()
	etcdURL := func(port int) string { return "http://" + net.JoinHostPort(addr, fmt.Sprint(port)) }
	cp := &ControlPlane{url: "https://" + net.JoinHostPort(addr, fmt.Sprint(apiServerPort)), binDir: binDir, token: token}
	cp.etcd, err = b.Start(host, "etcd", filepath.Join(binDir, "etcd"),
		"--name", "bed", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL(etcdClientPort), "--advertise-client-urls", etcdURL(etcdClientPort),
		"--listen-peer-urls", etcdURL(etcdPeerPort), "--initial-advertise-peer-urls", etcdURL(etcdPeerPort),
		"--initial-cluster", "bed="+etcdURL(etcdPeerPort), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	cp.api, err = b.Start(host, "kube-apiserver", filepath.Join(binDir, "kube-apiserver"),
		"--etcd-servers", etcdURL(etcdClientPort),
		"--secure-port", fmt.Sprint(apiServerPort), "--bind-address", addr, "--advertise-address", addr,
		"--cert-dir", filepath.Join(dir, "certs"),
		"--service-account-key-file", filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-cluster-ip-range", ServiceClusterRange)
	if err != nil {
		return nil, err
	}
	cp.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: host.Dial,
		// The API server signs its own serving certificate at start; the
		// bed trusts the host it started, as the kubeconfig says.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test bed only
	}}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, []byte(kubeconfig(cp.url, token)), 0o600); err != nil {
		return nil, fmt.Errorf("control plane kubeconfig: %w", err)
	}
	if err := cp.waitReady(ctx); err != nil {
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) waitReady(ctx context.Context) error {
	var last error
	for {
		code, body, err := cp.Do(ctx, http.MethodGet, "/readyz", nil)
		switch {
		case err == nil && code == http.StatusOK:
			return nil
		case err == nil:
			last = fmt.Errorf("status %d: %.300s", code, body)
		default:
			last = err
		}
		for _, p := range []*Proc{cp.etcd, cp.api} {
			if p.Exited() {
				return fmt.Errorf("control plane: %s exited: %s", p.Name, p.Tail(20))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("control plane not ready: %w (last answer: %v)", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Do sends one request to the API server as the admin, with a JSON body
// when body is not nil, and returns the status code and the answer.
func (cp *ControlPlane) Do(ctx context.Context, method, path string, body []byte) (int, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, cp.url+path, rd)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+cp.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cp.client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return resp.StatusCode, string(out), nil
}

// Kubectl runs kubectl from the host's namespace with the admin
// kubeconfig and returns what it printed.
func (cp *ControlPlane) Kubectl(ctx context.Context, from *Host, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", from.NS, filepath.Join(cp.binDir, "kubectl"), "--kubeconfig", cp.Kubeconfig}, args...)
	out, err := exec.CommandContext(ctx, "ip", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s from %s: %w: %s", strings.Join(args, " "), from.Name, err, out)
	}
	return string(out), nil
}

// writeCredentials writes the service-account key pair and a token file
// with one admin token (group system:masters) into dir, and returns the
// token.
func writeCredentials(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", err
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := hex.EncodeToString(raw)
	return token, errors.Join(
		os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600),
		os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644),
		os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(token+`,bed-admin,bed-admin,"system:masters"`+"\n"), 0o600),
	)
}

func kubeconfig(server, token string) string {
	return strings.Join([]string{
		"apiVersion: v1",
		"kind: Config",
		"clusters:",
		"- name: bed",
		"  cluster: {server: " + server + ", insecure-skip-tls-verify: true}",
		"users:",
		"- name: bed-admin",
		"  user: {token: " + token + "}",
		"contexts:",
		"- name: bed",
		"  context: {cluster: bed, user: bed-admin}",
		"current-context: bed",
		"",
	}, "\n")
}
