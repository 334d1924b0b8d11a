package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestSecretFileHoldsTheNewKeyThenTheOld(t *testing.T) {
	newKey, oldKey := "0123456789abcdef0123456789abcdef", "fedcba9876543210"
	path := writeFile(t, t.TempDir(), "cluster.key", []byte(b64(newKey)+"\n\n"+b64(oldKey)+"\n"))
	cfg, err := Parse([]byte("cluster:\n  secret_file: " + path + "\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if k := cfg.Cluster.SecretKeys; len(k) != 2 || string(k[0]) != newKey || string(k[1]) != oldKey {
		t.Fatalf("keys not read in order: %d keys", len(k))
	}
}

func TestSecretFileErrorsNameTheLine(t *testing.T) {
	a, b, c := b64("0123456789abcdef"), b64("fedcba9876543210"), b64("aaaaaaaaaaaaaaaa")
	for name, tc := range map[string]struct{ content, want string }{
		"three keys":   {a + "\n" + b + "\n" + c + "\n", "holds 3 keys; at most 2"},
		"same key":     {a + "\n" + a + "\n", "line 2 of the key file: the same key"},
		"bad second":   {a + "\nnot base64!\n", "line 2 of the key file: not a base64 key"},
		"short second": {a + "\n" + b64("short") + "\n", "line 2 of the key file: key is 5 bytes"},
		"empty":        {"\n\n", "no key in the file"},
		"too large":    {a + "\n" + strings.Repeat("\n", 5000), "larger than 4096 bytes: not a key file"},
	} {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "cluster.key", []byte(tc.content))
			err := parseFails(t, "cluster:\n  secret_file: "+path+"\n", "line 2: cluster.secret_file", path, tc.want)
			for _, key := range []string{a, b, c, "0123456789abcdef"} {
				if strings.Contains(err.Error(), key) {
					t.Errorf("error %q shows a key", err)
				}
			}
		})
	}
}

// A secret_file that is no file of keys but endless (a device) is refused
// at once rather than read until memory runs out.
func TestSecretFileThatNeverEndsIsRefused(t *testing.T) {
	parseFails(t, "cluster:\n  secret_file: /dev/zero\n", "line 2: cluster.secret_file", "/dev/zero", "larger than 4096 bytes")
}

// testCA issues certificates into files in dir.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	ca := &testCA{t: t, dir: dir}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	ca.cert, ca.key = ca.sign(tmpl)
	ca.file = writeFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	return ca
}

// sign makes a certificate from tmpl signed by the CA (self-signed while
// the CA has no certificate yet).
func (ca *testCA) sign(tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	parent, signer := tmpl, key
	if ca.cert != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		ca.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		ca.t.Fatal(err)
	}
	return cert, key
}

// issue writes a node certificate and its key, returning both paths.
func (ca *testCA) issue(name string, ip net.IP, usage ...x509.ExtKeyUsage) (certFile, keyFile string) {
	ca.t.Helper()
	cert, key := ca.sign(&x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage, IPAddresses: []net.IP{ip},
	})
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certFile = writeFile(ca.t, ca.dir, name+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	keyFile = writeFile(ca.t, ca.dir, name+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return certFile, keyFile
}

func clusterTLSDoc(secret, cert, key, ca string) string {
	doc := "cluster:\n  raft_bind: 198.18.0.11:7000\n"
	if secret != "" {
		doc += "  secret_file: " + secret + "\n"
	}
	doc += "  tls:\n"
	for _, f := range []struct{ k, v string }{{"cert_file", cert}, {"key_file", key}, {"ca_file", ca}} {
		if f.v != "" {
			doc += "    " + f.k + ": " + f.v + "\n"
		}
	}
	return doc
}

func TestClusterTLSFilesAreReadAndChecked(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	cert, key := ca.issue("lb-1", net.ParseIP("198.18.0.11"), both...)
	secret := writeFile(t, dir, "cluster.key", []byte(b64("0123456789abcdef")+"\n"))

	cfg, err := Parse([]byte(clusterTLSDoc(secret, cert, key, ca.file)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got := cfg.Cluster.TLS
	for _, f := range []struct {
		path string
		data []byte
	}{{cert, got.CertPEM}, {key, got.KeyPEM}, {ca.file, got.CAPEM}} {
		want, _ := os.ReadFile(f.path)
		if !bytes.Equal(f.data, want) {
			t.Errorf("%s not read", f.path)
		}
	}

	other := newTestCA(t, dir, "other")
	otherCert, otherKey := other.issue("lb-x", net.ParseIP("198.18.0.11"), both...)
	wrongIP, wrongIPKey := ca.issue("lb-2", net.ParseIP("198.18.0.12"), both...)
	serverOnly, serverOnlyKey := ca.issue("lb-s", net.ParseIP("198.18.0.11"), x509.ExtKeyUsageServerAuth)
	garbage := writeFile(t, dir, "garbage.pem", []byte("not pem\n"))
	for name, tc := range map[string]struct {
		doc  string
		want []string
	}{
		"no secret file": {clusterTLSDoc("", cert, key, ca.file),
			[]string{"cluster.tls", "needs cluster.secret_file"}},
		"missing ca_file": {clusterTLSDoc(secret, cert, key, ""),
			[]string{"cluster.tls.ca_file", "required when cluster.tls is set"}},
		"unreadable cert": {clusterTLSDoc(secret, filepath.Join(dir, "nope.crt"), key, ca.file),
			[]string{"cluster.tls.cert_file", "nope.crt", "cannot read"}},
		"cert not PEM": {clusterTLSDoc(secret, garbage, key, ca.file),
			[]string{"cluster.tls.cert_file", "garbage.pem", "no PEM certificate"}},
		"key of another cert": {clusterTLSDoc(secret, cert, wrongIPKey, ca.file),
			[]string{"cluster.tls.key_file", "lb-2.key", "does not go with cert_file"}},
		"ca not PEM": {clusterTLSDoc(secret, cert, key, garbage),
			[]string{"cluster.tls.ca_file", "no PEM certificate"}},
		"cert from another CA": {clusterTLSDoc(secret, otherCert, otherKey, ca.file),
			[]string{"cluster.tls.cert_file", "lb-x.crt", "not valid from ca_file"}},
		"server use only": {clusterTLSDoc(secret, serverOnly, serverOnlyKey, ca.file),
			[]string{"cluster.tls.cert_file", "server and client use"}},
		"another node's address": {clusterTLSDoc(secret, wrongIP, wrongIPKey, ca.file),
			[]string{"cluster.tls.cert_file", "lb-2.crt", "does not name raft_bind's address 198.18.0.11"}},
	} {
		t.Run(name, func(t *testing.T) { parseFails(t, tc.doc, tc.want...) })
	}
}
