package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// validateClusterSecurity reads and checks cluster.secret_file and
// cluster.tls, keeping their contents for the daemon.
func (v *validator) validateClusterSecurity(c *Cluster) {
	if c.SecretFile != "" {
		keys, err := ReadSecretKeys(c.SecretFile)
		if err != nil {
			v.bad("cluster.secret_file", c.SecretFile, "%v", err)
		}
		c.SecretKeys = keys
	}
	if !c.TLS.Set() {
		return
	}
	if c.SecretFile == "" {
		v.bad("cluster.tls", "", "needs cluster.secret_file too: the cluster key encrypts gossip, and a host that could gossip unencrypted would be added as a voter")
	}
	t := &c.TLS
	read := true
	for _, f := range []struct {
		key, file string
		data      *[]byte
	}{{"cert_file", t.CertFile, &t.CertPEM}, {"key_file", t.KeyFile, &t.KeyPEM}, {"ca_file", t.CAFile, &t.CAPEM}} {
		path := "cluster.tls." + f.key
		if f.file == "" {
			v.bad(path, "", "required when cluster.tls is set (cert_file, key_file and ca_file go together)")
			read = false
			continue
		}
		data, err := os.ReadFile(f.file)
		if err != nil {
			v.bad(path, f.file, "cannot read: %v", errors.Unwrap(err))
			read = false
			continue
		}
		*f.data = data
	}
	if read {
		v.checkClusterCertificate(t, c.RaftBind)
	}
}

// checkClusterCertificate checks what a peer will check at the handshake, so
// a mistake shows at load instead of as refused Raft connections: the key
// goes with the certificate, the CA issued it for both TLS server and client
// use, and it names raft_bind's IP, which the dialling peer verifies.
func (v *validator) checkClusterCertificate(t *ClusterTLS, raftBind string) {
	chain, err := parseCertificates(t.CertPEM)
	if err != nil {
		v.bad("cluster.tls.cert_file", t.CertFile, "%v", err)
		return
	}
	if _, err := tls.X509KeyPair(t.CertPEM, t.KeyPEM); err != nil {
		v.bad("cluster.tls.key_file", t.KeyFile, "does not go with cert_file %s: %v", t.CertFile, err)
		return
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(t.CAPEM) {
		v.bad("cluster.tls.ca_file", t.CAFile, "no PEM certificate in the file")
		return
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	for _, use := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		opts := x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{use}}
		if _, err := chain[0].Verify(opts); err != nil {
			v.bad("cluster.tls.cert_file", t.CertFile, "not valid from ca_file %s for TLS server and client use: %v", t.CAFile, err)
			return
		}
	}
	if host, _, err := net.SplitHostPort(raftBind); err == nil {
		if err := chain[0].VerifyHostname(host); err != nil {
			v.bad("cluster.tls.cert_file", t.CertFile, "does not name raft_bind's address %s as an IP SAN, which dialling peers check: %v", host, err)
		}
	}
}

// parseCertificates returns the certificates of a PEM file, leaf first.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate in the file")
	}
	return out, nil
}

// maxSecretKeys is how many keys a secret file may hold: the one in use and,
// during a rotation, one more (docs/security.md).
const maxSecretKeys = 2

// maxSecretFile bounds the key file's size: two keys and blank lines take
// well under a hundred bytes.
const maxSecretFile = 4096

// ReadSecretKeys reads a cluster key file: one key per line, each base64 of
// 16, 24 or 32 bytes (what `vipctl keygen` prints); blank lines are skipped.
// The first key is used for sending, both are accepted. Errors name the line,
// never the key.
func ReadSecretKeys(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", errors.Unwrap(err))
	}
	defer f.Close()
	// Bounded: a path set to the wrong file (/dev/zero, a log) must not hang
	// or fill the memory of a load that should just refuse it.
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key: %w", errors.Unwrap(err))
	}
	if len(data) > maxSecretFile {
		return nil, fmt.Errorf("larger than %d bytes: not a key file (vipctl keygen prints one key per line)", maxSecretFile)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("line %d of the key file: not a base64 key (create one with vipctl keygen)", i+1)
		}
		switch len(key) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("line %d of the key file: key is %d bytes; it must be 16, 24 or 32", i+1, len(key))
		}
		for _, k := range keys {
			if string(k) == string(key) {
				return nil, fmt.Errorf("line %d of the key file: the same key as an earlier line", i+1)
			}
		}
		keys = append(keys, key)
	}
	switch {
	case len(keys) == 0:
		return nil, errors.New("no key in the file (create one with vipctl keygen)")
	case len(keys) > maxSecretKeys:
		return nil, fmt.Errorf("holds %d keys; at most %d: the key to send with, then the one being retired", len(keys), maxSecretKeys)
	}
	return keys, nil
}
