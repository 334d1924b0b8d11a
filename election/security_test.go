package election

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

var (
	keyA = []byte("0123456789abcdef0123456789abcdef")
	keyB = []byte("fedcba9876543210fedcba9876543210")
	keyX = []byte("an unrelated key, never accepted")
)

func withKeys(keys ...[]byte) func(int, *Options) {
	return func(_ int, o *Options) { o.SecretKeys = keys }
}

func TestDerivedCertificateIsTheSameOnEveryNode(t *testing.T) {
	cert := func(k []byte) []byte {
		t.Helper()
		priv, err := derivedKey(k)
		if err != nil {
			t.Fatal(err)
		}
		c, err := derivedCertificate(priv)
		if err != nil {
			t.Fatal(err)
		}
		return c.Certificate[0]
	}
	if !bytes.Equal(cert(keyA), cert(keyA)) {
		t.Fatal("two derivations from the same key differ")
	}
	a, _ := derivedKey(keyA)
	b, _ := derivedKey(keyB)
	if a.Equal(b) {
		t.Fatal("two cluster keys derive the same key pair")
	}
	if bytes.Contains(cert(keyA), keyA) {
		t.Fatal("the certificate carries the cluster key")
	}
}

// TestKeyedClusterFormsOverTLS forms three-node clusters with a derived key
// pair and with a CA: they elect, and no handshake fails between members.
func TestKeyedClusterFormsOverTLS(t *testing.T) {
	pki := newTestPKI(t)
	for name, mod := range map[string]func(int, *Options){
		"derived": withKeys(keyA),
		"ca":      func(_ int, o *Options) { o.SecretKeys, o.TLS = [][]byte{keyA}, pki.identity(t) },
	} {
		t.Run(name, func(t *testing.T) {
			c, _ := formedClusterWith(t, mod)
			if err := c.leaders()[0].SetDrained("web", "198.18.0.21:80", true); err != nil {
				t.Fatalf("replicate: %v", err)
			}
			for _, tn := range c.nodes {
				eventually(t, 5*time.Second, func() error {
					if len(tn.Intent().Drained) != 1 {
						return fmtErr("%s has not applied the drain", tn.opts.NodeName)
					}
					return nil
				})
				if f := tn.handshakeFailures(t, ""); f != 0 {
					t.Errorf("%s counted %v handshake failures between members", tn.opts.NodeName, f)
				}
			}
		})
	}
}

// TestWrongKeyNodeCannotJoin runs a keyed cluster: a node with another key,
// or with none, neither joins gossip nor gets into the Raft configuration; a
// node with the right key does.
func TestWrongKeyNodeCannotJoin(t *testing.T) {
	c, leader := formedClusterWith(t, withKeys(keyA))
	strangers := []*tnode{
		c.add(func(o *Options) { o.SecretKeys = [][]byte{keyX} }),
		c.add(nil),
	}
	// Their join loops retry every 2 s at most: a few attempts each.
	time.Sleep(5 * time.Second)
	for _, s := range strangers {
		for _, m := range leader.Status().Members {
			if m.Name == s.opts.NodeName {
				t.Fatalf("stranger is a member: %+v", m)
			}
		}
		if st := s.Status(); st.Leader != "" || len(st.Members) > 1 {
			t.Fatalf("stranger %s sees the cluster: %+v", s.opts.NodeName, st)
		}
		if s.rec.gains() != 0 {
			t.Fatalf("stranger %s led", s.opts.NodeName)
		}
	}
	c.waitVoters(time.Second, "n0", "n1", "n2")

	friend := c.add(func(o *Options) { o.SecretKeys = [][]byte{keyA} })
	c.waitVoters(10*time.Second, "n0", "n1", "n2", friend.opts.NodeName)
}

// TestWrongKeyNodeCannotVote leaves a keyed three-node cluster with one
// member down and another restarted as a stranger (wrong key, no key,
// another CA) from its own data dir, so it still knows every Raft address.
// The last member needs the stranger's vote for a quorum: it must not get
// it, and the stranger must never lead (it would hold the VIP). The
// stranger restarted with the right key then lets the cluster elect, so the
// layout itself could elect.
func TestWrongKeyNodeCannotVote(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	caMod := func(_ int, o *Options) { o.SecretKeys, o.TLS = [][]byte{keyA}, pki.identity(t) }
	for name, tc := range map[string]struct {
		cluster  func(int, *Options)
		stranger func(*Options)
	}{
		"wrong key": {withKeys(keyA), func(o *Options) { o.SecretKeys = [][]byte{keyX} }},
		"no key":    {withKeys(keyA), func(o *Options) { o.SecretKeys = nil }},
		"other ca":  {caMod, func(o *Options) { o.TLS = other.identity(t) }},
	} {
		t.Run(name, func(t *testing.T) {
			c, leader := formedClusterWith(t, tc.cluster)
			var down, stranger *tnode
			for _, tn := range c.nodes {
				switch {
				case tn == leader:
				case down == nil:
					down = tn
				default:
					stranger = tn
				}
			}
			c.stop(down)
			good := stranger.opts
			c.stop(stranger)
			before := leader.handshakeFailures(t, "")
			tc.stranger(&stranger.opts)
			c.start(stranger)

			lost := false
			eventually(t, 30*time.Second, func() error {
				if !lost {
					if leader.rec.isLeader() {
						return fmtErr("%s still leads: the stranger is in its quorum", leader.opts.NodeName)
					}
					lost = true
				}
				if ls := c.leaders(); len(ls) > 0 {
					t.Fatalf("%s leads with a stranger in the quorum", ls[0].opts.NodeName)
				}
				// Every refused connection is an election round or a
				// replication attempt that the stranger did not take part in.
				if f := leader.handshakeFailures(t, "") - before; f < 10 {
					return fmtErr("%v handshakes refused so far", f)
				}
				return nil
			})
			if stranger.rec.gains() != 0 {
				t.Fatal("the stranger led")
			}

			c.stop(stranger)
			stranger.opts = good
			c.start(stranger)
			c.waitLeader(15 * time.Second)
			c.checkNoOverlap()
		})
	}
}

// TestForgedRequestVoteChangesNothingWithKey writes a RequestVote with a
// huge term to every member of a keyed cluster, encoded by raft's own
// NetworkTransport: from a plain socket and from TLS with an unaccepted key.
// Each is refused at the handshake: no term moves, no leadership changes.
// The same forgery takes over a cluster without a key (the test below), and
// the TLS sender with the right key reaches raft, so the refusals are the
// handshake's doing.
func TestForgedRequestVoteChangesNothingWithKey(t *testing.T) {
	c, leader := formedClusterWith(t, withKeys(keyA))
	term := leader.raft().CurrentTerm()
	changes := map[*tnode]int{}
	for _, tn := range c.nodes {
		changes[tn] = tn.rec.changes()
	}
	impostor := testSecurity(t, keyX, keyA) // presents X, would accept the cluster's A
	for _, forger := range []struct {
		sec    *security
		reason string
	}{{&security{}, reasonNotTLS}, {impostor, reasonUntrustedPeer}} {
		for _, tn := range c.nodes {
			before := tn.handshakeFailures(t, forger.reason)
			if resp, err := forgeVote(t, forger.sec, raftAddr(tn), term+1_000_000); err == nil {
				t.Fatalf("%s answered a forged vote (%s): %+v", tn.opts.NodeName, forger.reason, resp)
			}
			eventually(t, 5*time.Second, func() error {
				if tn.handshakeFailures(t, forger.reason) <= before {
					return fmtErr("%s has not counted the %s handshake", tn.opts.NodeName, forger.reason)
				}
				return nil
			})
		}
	}
	for _, tn := range c.nodes {
		if got := tn.raft().CurrentTerm(); got != term {
			t.Errorf("%s term %d, was %d", tn.opts.NodeName, got, term)
		}
		if tn.rec.changes() != changes[tn] {
			t.Errorf("%s reported a leadership change", tn.opts.NodeName)
		}
	}
	if ls := c.leaders(); len(ls) != 1 || ls[0] != leader {
		t.Fatalf("leadership moved")
	}
	// The right key reaches raft: a harmless vote (term 0) gets an answer.
	resp, err := forgeVote(t, testSecurity(t, keyA), raftAddr(leader), 0)
	if err != nil || resp.Term != term || resp.Granted {
		t.Fatalf("a vote with the right key: %+v, %v", resp, err)
	}
}

// TestForgedRequestVoteTakesOverWithoutKey is what a cluster without a key
// exposes (docs/security.md): the forgery of the test above, from a plain
// socket, moves the term and deposes the leader.
func TestForgedRequestVoteTakesOverWithoutKey(t *testing.T) {
	c, leader := formedCluster(t)
	forged := leader.raft().CurrentTerm() + 1_000_000
	resp, err := forgeVote(t, &security{}, raftAddr(leader), forged)
	if err != nil || !resp.Granted {
		t.Fatalf("forged vote: %+v, %v", resp, err)
	}
	eventually(t, 5*time.Second, func() error {
		if got := leader.raft().CurrentTerm(); got < forged {
			return fmtErr("term %d, forged %d", got, forged)
		}
		if leader.rec.isLeader() {
			return fmtErr("%s still leads", leader.opts.NodeName)
		}
		return nil
	})
	c.waitLeader(15 * time.Second)
}

// TestSilentRaftPeerIsDropped connects to a keyed node's Raft port and says
// nothing: the handshake gives up after the raft I/O timeout, closes the
// connection and counts a timeout, so idle sockets cannot pile up.
func TestSilentRaftPeerIsDropped(t *testing.T) {
	c := newCluster(t, 1, 1, relaxedTiming, withKeys(keyA))
	n := c.waitLeader(15 * time.Second)
	conn, err := net.Dial("tcp", n.opts.RaftBind)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	limit := 5 * ioTimeout(n.opts.Timing)
	_ = conn.SetReadDeadline(time.Now().Add(limit))
	start := time.Now()
	if _, err := conn.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a silent peer kept its connection for %v", limit)
	}
	t.Logf("dropped after %v", time.Since(start).Round(time.Millisecond))
	eventually(t, 5*time.Second, func() error {
		if got := n.handshakeFailures(t, reasonTimeout); got != 1 {
			return fmtErr("%v handshake timeouts counted, want 1", got)
		}
		return nil
	})
}

// forgeVote sends one RequestVote to target through raft's NetworkTransport
// over a stream layer secured by sec (plain TCP when empty). The request has
// no server ID (as from an old raft version, so no membership check) and the
// leadership-transfer flag (so a known leader does not stop the vote), and
// claims a log as new as its term.
func forgeVote(t *testing.T, sec *security, target raft.ServerAddress, term uint64) (*raft.RequestVoteResponse, error) {
	t.Helper()
	tcp, err := listenTCP(fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	var stream raft.StreamLayer = tcp
	if sec.raftServer != nil {
		stream = newTLSLayer(tcp, sec, time.Second, zap.NewNop(), newMetricsForTest(t).handshakeFailures)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 1, Timeout: 2 * time.Second, Logger: hclog.NewNullLogger(),
	})
	defer trans.Close()
	req := &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(tcp.Addr().String())},
		Term:      term, LastLogIndex: term, LastLogTerm: term, LeadershipTransfer: true,
	}
	var resp raft.RequestVoteResponse
	err = trans.RequestVote("", target, req, &resp)
	return &resp, err
}

func newMetricsForTest(t testing.TB) *metrics {
	t.Helper()
	return newMetrics(func() float64 { return 0 }, func() float64 { return 0 }, func() float64 { return 0 })
}

func testSecurity(t testing.TB, keys ...[]byte) *security {
	t.Helper()
	s, err := newSecurity(keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKeyRotationWithoutFailover rotates a three-node cluster from key A to
// key B in the three rolling steps of docs/security.md: [A, B] (B accepted),
// [B, A] (B used), [B]. Each step restarts the followers one by one, then
// hands leadership to a restarted follower and restarts the old leader.
// "Without a failover" means: after every restart the node is back in both
// transports (it applies a new log entry and sees every member alive), the
// only elections are the three planned transfers (leadership gains and the
// term both count exactly those), and no two leaderships overlap.
//
// The cluster runs the wan timing. The test counts elections across nine
// restarts, each of which opens new TLS connections (several ms of CPU each
// under -race); with relaxedTiming's 200 ms lease, a 250 ms stall of this
// shared VM at load average 15-23 made a leader step down about one run in
// three. Riding out stalls is the timing profile's business, not the key's.
func TestKeyRotationWithoutFailover(t *testing.T) {
	c := newCluster(t, 3, 3, wanTiming, withKeys(keyA))
	leader := c.waitLeader(30 * time.Second)
	c.waitVoters(10*time.Second, "n0", "n1", "n2")
	term := leader.raft().CurrentTerm()
	gains, planned, entry := 0, 0, 0
	restart := func(tn *tnode, keys [][]byte) {
		t.Helper()
		c.stop(tn)
		gains += tn.rec.gains()
		tn.opts.SecretKeys = keys
		t.Logf("restart %s with %d keys", tn.opts.NodeName, len(keys))
		c.start(tn)
		entry++
		backend := fmt.Sprintf("198.18.0.%d:80", entry)
		if err := leader.SetDrained("rotation", backend, true); err != nil {
			t.Fatalf("drain after restarting %s: %v", tn.opts.NodeName, err)
		}
		eventually(t, 30*time.Second, func() error {
			in := tn.Intent()
			if len(in.Drained) != entry {
				return fmtErr("restarted %s applied %d of %d entries", tn.opts.NodeName, len(in.Drained), entry)
			}
			for _, other := range c.nodes {
				for _, m := range c.nodes {
					if !alive(other, m.opts.NodeName) {
						return fmtErr("%s sees %s dead in gossip", other.opts.NodeName, m.opts.NodeName)
					}
				}
			}
			return nil
		})
	}
	for _, keys := range [][][]byte{{keyA, keyB}, {keyB, keyA}, {keyB}} {
		for _, tn := range c.nodes {
			if tn != leader {
				restart(tn, keys)
			}
		}
		old := leader
		// A peer's restart fails the leader's heartbeat to its old
		// connection, sometimes only after the checks above passed; until
		// the heartbeats resume the leader rightly hands over to no one.
		eventually(t, 5*time.Second, func() error {
			err := old.TransferLeadership()
			if err != nil && !errors.Is(err, ErrNoPeer) {
				t.Fatalf("transfer: %v", err)
			}
			return err
		})
		planned++
		leader = c.waitLeader(30*time.Second, old)
		t.Logf("planned transfer: %s to %s", old.opts.NodeName, leader.opts.NodeName)
		restart(old, keys)
	}
	for _, tn := range c.nodes {
		gains += tn.rec.gains()
		if got := tn.raft().CurrentTerm(); got != term+uint64(planned) {
			t.Errorf("%s term %d, want %d + %d planned transfers", tn.opts.NodeName, got, term, planned)
		}
	}
	if want := 1 + planned; gains != want {
		t.Errorf("%d leadership gains, want %d: the first and one per planned transfer", gains, want)
	}
	c.checkNoOverlap()
}

// handshakeFailures reads vipd_raft_handshake_failures_total for one reason,
// or summed over all for "".
func (tn *tnode) handshakeFailures(t *testing.T, reason string) float64 {
	t.Helper()
	return labelledCounter(t, tn.reg, "vipd_raft_handshake_failures_total", "reason", reason)
}

func labelledCounter(t *testing.T, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && (value == "" || l.GetValue() == value) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
		return sum
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// testPKI is a CA that issues node certificates for 127.0.0.1.
type testPKI struct {
	caPEM []byte
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test cluster ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &testPKI{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca: ca, key: key}
}

// identity issues a new node certificate (serverAuth and clientAuth, IP SAN 127.0.0.1).
func (p *testPKI) identity(t *testing.T) *TLSIdentity {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &TLSIdentity{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CAPEM:   p.caPEM,
	}
}

// BenchmarkRaftConnect measures what a new Raft connection costs before its
// first RPC, plain and over TLS with the derived pair: dial, handshake, one
// byte each way. A new leader opens a few of these on the failover path.
func BenchmarkRaftConnect(b *testing.B) {
	for _, tc := range []struct {
		name string
		sec  *security
	}{{"plain", &security{}}, {"tls", testSecurity(b, keyA)}} {
		b.Run(tc.name, func(b *testing.B) {
			server, addr := benchLayer(b, tc.sec)
			client, _ := benchLayer(b, tc.sec)
			go func() {
				for {
					c, err := server.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						buf := make([]byte, 1)
						if _, err := c.Read(buf); err == nil {
							_, _ = c.Write(buf)
						}
					}()
				}
			}()
			buf := make([]byte, 1)
			for b.Loop() {
				c, err := client.Dial(addr, time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
}

// benchLayer returns a stream layer on a loopback port and its address.
func benchLayer(b *testing.B, sec *security) (raft.StreamLayer, raft.ServerAddress) {
	b.Helper()
	tcp, err := listenTCP("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tcp.Close() })
	addr := raft.ServerAddress(tcp.ln.Addr().String())
	if sec.raftServer == nil {
		return tcp, addr
	}
	return newTLSLayer(tcp, sec, time.Second, zap.NewNop(), newMetricsForTest(b).handshakeFailures), addr
}
