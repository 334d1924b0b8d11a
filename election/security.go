package election

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/hashicorp/memberlist"
)

// TLSIdentity is a node's certificate for mutual TLS on the Raft transport,
// issued by a CA the operator runs, all in PEM. Every node's certificate
// must name its Raft IP address (an IP SAN) and allow both server and client
// authentication.
type TLSIdentity struct {
	CertPEM []byte // the node's certificate, optionally followed by intermediates
	KeyPEM  []byte // its private key
	CAPEM   []byte // the CA certificates that issue the cluster's certificates
}

// security is what the cluster keys, or a CA-issued identity, make of the
// two transports (docs/security.md). Gossip is encrypted by memberlist's
// keyring with the cluster keys themselves; Raft runs over TLS 1.3, with a
// key pair derived from the cluster keys or with the identity.
type security struct {
	raftServer, raftClient *tls.Config         // nil: Raft over plain TCP
	keyring                *memberlist.Keyring // nil: gossip in clear
}

// newSecurity builds the transports' security. keys are the cluster keys,
// the first one used for sending; id, when set, replaces the derived key pair
// on Raft (gossip still needs the keys).
func newSecurity(keys [][]byte, id *TLSIdentity) (*security, error) {
	if len(keys) == 0 {
		if id != nil {
			// Without a gossip key anyone who can reach gossip_bind could gossip a
			// Raft address, and the leader adds gossiped servers as voters.
			return nil, errors.New("raft tls: needs a cluster key too, which encrypts gossip")
		}
		return &security{}, nil
	}
	ring, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	s := &security{keyring: ring}
	if id != nil {
		s.raftServer, s.raftClient, err = caTLS(id)
	} else {
		s.raftServer, s.raftClient, err = pinnedTLS(keys)
	}
	if err != nil {
		return nil, fmt.Errorf("raft tls: %w", err)
	}
	return s, nil
}

// derivedKeyInfo separates the Raft key pair from the other use of a cluster
// key (memberlist's AES-GCM uses the key itself). Changing it changes every
// node's key pair: a wire break between versions.
const derivedKeyInfo = "vipd raft tls ed25519 v1"

// derivedKey turns a cluster key into an Ed25519 key pair, the same on every
// node. HKDF-SHA256 without a salt: the input is already a uniformly random
// key (vipctl keygen), so a salt would add nothing; the info string gives
// domain separation. Ed25519 because a seed is its private key, so the
// derivation needs no deterministic-randomness tricks, and TLS 1.3 in Go
// signs and verifies with it.
func derivedKey(clusterKey []byte) (ed25519.PrivateKey, error) {
	seed, err := hkdf.Key(sha256.New, clusterKey, nil, derivedKeyInfo, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("derive raft key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// derivedCertificate is the self-signed certificate every node with the same
// cluster key presents. Its fields are fixed (serial 1, valid 2000 to 9999)
// and Ed25519 signatures are deterministic, so every node builds the same
// bytes; peers check only its public key (pinning), never its dates or names.
func derivedCertificate(priv ed25519.PrivateKey) (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "vipd cluster"},
		NotBefore:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("raft certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("raft certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
}

// errUnknownPeerKey is a peer whose certificate key derives from no cluster
// key this node accepts.
var errUnknownPeerKey = errors.New("peer certificate key is not derived from an accepted cluster key")

// pinnedTLS builds both ends of Raft's TLS from the cluster keys: each node
// presents the certificate of the first key and accepts a peer whose leaf
// key derives from any of them.
//
// Both ends skip crypto/tls's chain checks (InsecureSkipVerify on the dialer,
// RequireAnyClientCert on the acceptor): there is no CA, and the self-signed
// certificate's dates and names mean nothing. VerifyConnection replaces
// them, on both ends, with the pin. That is sufficient because TLS 1.3 makes
// each side sign the handshake with the private key of the certificate it
// presents (CertificateVerify), which crypto/tls checks whatever the
// verification settings: a peer that passes the pin holds the derived
// private key, so it knows a cluster key.
func pinnedTLS(keys [][]byte) (server, client *tls.Config, err error) {
	var own tls.Certificate
	accepted := make([]ed25519.PublicKey, 0, len(keys))
	for i, k := range keys {
		priv, err := derivedKey(k)
		if err != nil {
			return nil, nil, err
		}
		if i == 0 {
			if own, err = derivedCertificate(priv); err != nil {
				return nil, nil, err
			}
		}
		accepted = append(accepted, priv.Public().(ed25519.PublicKey))
	}
	pin := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errUnknownPeerKey
		}
		if pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey); ok {
			for _, a := range accepted {
				if a.Equal(pub) {
					return nil
				}
			}
		}
		return errUnknownPeerKey
	}
	server, client = mutualTLS(own)
	server.ClientAuth = tls.RequireAnyClientCert
	server.VerifyConnection = pin
	client.InsecureSkipVerify = true // replaced by pin, see above
	client.VerifyConnection = pin
	return server, client, nil
}

// mutualTLS returns both ends of TLS 1.3 presenting cert, before their
// verification settings.
func mutualTLS(cert tls.Certificate) (server, client *tls.Config) {
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	return server, server.Clone()
}

// caTLS builds ordinary mutual TLS 1.3 from a CA: the acceptor requires a
// client certificate the CA issued; the dialer checks the acceptor's
// certificate against the CA and the dialed IP (tlsLayer.Dial sets
// ServerName).
func caTLS(id *TLSIdentity) (server, client *tls.Config, err error) {
	cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate and key: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(id.CAPEM) {
		return nil, nil, errors.New("ca: no PEM certificate found")
	}
	server, client = mutualTLS(cert)
	server.ClientAuth = tls.RequireAndVerifyClientCert
	server.ClientCAs = pool
	client.RootCAs = pool
	return server, client, nil
}
