package election

import (
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// FuzzGossipMeta decodes arbitrary node metadata, as any host that reaches
// the gossip port can send it (without a cluster key). Decoding never
// panics; unreadable metadata leaves the peer's last known state alone;
// and what NodeMeta encodes decodes to the same meta.
func FuzzGossipMeta(f *testing.F) {
	good, _ := json.Marshal(meta{RaftAddr: "198.18.0.12:7000", Role: RoleVoter, Admin: "198.18.0.12:9900",
		Pools: 2, Healthy: 2, LinkUp: true, Clustered: true, Started: 1767225600000000000})
	f.Add(good, "198.18.0.11:7000", "voter", "127.0.0.1:9900", 1, 1, true, false, true, int64(1))
	f.Add([]byte(`{"r":"198.18.0.13:7000","o":"witness","p":0,"h":0,"l":false,"x":true,"s":-1}`),
		"[2001:2::1]:7000", "witness", "", 0, 0, false, true, false, int64(-1))
	f.Add([]byte(`{"p":1e400}`), "", "", "", -1, 3, true, true, true, int64(0))
	f.Add([]byte(`{"r":7000}`), "198.18.0.11:7000", "voter", "", 1<<40, 1<<40, true, false, false, int64(1)<<62)
	f.Add([]byte(nil), "198.18.0.11:7000", "voter", "", 0, 0, false, false, false, int64(0))
	f.Fuzz(func(t *testing.T, raw []byte, raftAddr, role, admin string, pools, healthy int, linkUp, leaving, clustered bool, started int64) {
		known := meta{RaftAddr: "198.18.0.12:7000", Role: RoleVoter, Pools: 1, Healthy: 1, LinkUp: true, Started: 1}
		local := meta{RaftAddr: raftAddr, Role: Role(role), Admin: admin, Pools: pools, Healthy: healthy,
			LinkUp: linkUp, Leaving: leaving, Clustered: clustered, Started: started}
		g := newGossip(zap.NewNop(), func() meta { return local }, func() {}, time.Now)
		knownMeta, _ := json.Marshal(known)
		g.update(&memberlist.Node{Name: "peer", Meta: knownMeta}, true)

		// Whatever a peer sends.
		g.update(&memberlist.Node{Name: "peer", Meta: raw}, false)
		p, ok := g.get("peer")
		var sent meta
		switch {
		case !ok:
			t.Fatal("the known peer vanished")
		case json.Unmarshal(raw, &sent) != nil:
			if p.meta != known || !p.alive {
				t.Fatalf("unreadable metadata %q changed the peer to %+v", raw, p)
			}
		case p.meta != sent || p.alive:
			t.Fatalf("metadata %q recorded as %+v, want %+v (not alive)", raw, p, sent)
		}

		// What this node sends. JSON carries only valid UTF-8; every string
		// in meta is an address or a role, which are ASCII.
		enc := g.NodeMeta(memberlist.MetaMaxSize)
		if !utf8.ValidString(raftAddr) || !utf8.ValidString(role) || !utf8.ValidString(admin) {
			return
		}
		if whole, _ := json.Marshal(local); len(whole) > memberlist.MetaMaxSize {
			if enc != nil {
				t.Fatalf("NodeMeta sent %d bytes, over memberlist's limit of %d", len(enc), memberlist.MetaMaxSize)
			}
			return
		}
		g.update(&memberlist.Node{Name: "self", Meta: enc}, true)
		if p, _ := g.get("self"); p.meta != local {
			t.Fatalf("meta %+v came back as %+v from %q", local, p.meta, enc)
		}
	})
}
