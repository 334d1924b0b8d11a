package lease

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// ProtocolByte opens a connection of the lease protocol on the Raft
// transport's port (docs/architecture.md, "Where the messages travel").
// hashicorp/raft opens its connections with an RPC type, a small integer,
// so the stream layer tells the two apart by this first byte.
const ProtocolByte byte = 'L'

// Kind is what a Message is.
type Kind string

// Message kinds.
const (
	// KindRequest (holder → leader): renew the leases on VIPs, asked for by
	// Node with id ID; Healthy lists the frontends Node has a healthy
	// backend for (placement's fitness per frontend).
	KindRequest Kind = "request"
	// KindAnswer (leader → holder): the VIPs that request ID is granted,
	// once a round committed after it arrived; Gone lists those it asked
	// for that are now assigned to another node.
	KindAnswer Kind = "answer"
	// KindRelease (holder → leader): Node deleted VIPs; ID is the last
	// request it sent before (0: none), so that a release overtaken by a
	// later grant frees nothing. With Leaving it stops asking, so its VIPs
	// go elsewhere at once.
	KindRelease Kind = "release"
	// KindNotLeader (leader → holder): this node grants nothing now.
	KindNotLeader Kind = "not_leader"
)

// Message is one frame of the lease protocol.
type Message struct {
	Kind    Kind      `json:"k"`
	ID      RequestID `json:"i,omitempty"`
	Node    string    `json:"n,omitempty"`
	VIPs    []string  `json:"v,omitempty"`
	Gone    []string  `json:"g,omitempty"`
	Healthy []string  `json:"h,omitempty"`
	Leaving bool      `json:"l,omitempty"`
}

// Limits of a frame: far above what a cluster of a few nodes and a few
// hundred VIPs sends, low enough that garbage cannot make a node allocate.
const (
	MaxFrame   = 64 << 10
	maxNames   = 1024
	maxNameLen = 128
)

// ErrMalformed is wrapped by every error ReadMessage returns for bytes
// that are not a valid frame (as opposed to an I/O error).
var ErrMalformed = errors.New("malformed lease message")

// WriteMessage writes m as one frame: a 4-byte big-endian length, then m
// as JSON.
func WriteMessage(w io.Writer, m Message) error {
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode lease %s: %w", m.Kind, err)
	}
	if len(body) > MaxFrame {
		return fmt.Errorf("encode lease %s: %d bytes, more than %d", m.Kind, len(body), MaxFrame)
	}
	frame := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(frame, uint32(len(body)))
	copy(frame[4:], body)
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("send lease %s: %w", m.Kind, err)
	}
	return nil
}

// ReadMessage reads and checks one frame. Bytes that do not make a valid
// message give an error wrapping ErrMalformed; the connection is then
// unusable (the caller closes it).
func ReadMessage(r io.Reader) (Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Message{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return Message{}, fmt.Errorf("%w: frame of %d bytes (want 1-%d)", ErrMalformed, n, MaxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, err
	}
	return DecodeMessage(body)
}

// DecodeMessage decodes and checks one frame's body.
func DecodeMessage(body []byte) (Message, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var m Message
	if err := dec.Decode(&m); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Message{}, fmt.Errorf("%w: bytes after the message", ErrMalformed)
	}
	if err := m.check(); err != nil {
		return Message{}, fmt.Errorf("%w: %s: %v", ErrMalformed, m.Kind, err)
	}
	return m, nil
}

// check refuses what no node sends: unknown kinds, fields a kind does not
// carry, missing senders and ids, VIPs that are not addresses.
func (m Message) check() error {
	var needNode, needID, anyID, vips, gone, healthy, leaving bool
	switch m.Kind {
	case KindRequest:
		needNode, needID, vips, healthy = true, true, true, true
	case KindAnswer:
		needID, vips, gone = true, true, true
	case KindRelease:
		needNode, anyID, vips, leaving = true, true, true, true
	case KindNotLeader:
	default:
		return fmt.Errorf("unknown kind %q", m.Kind)
	}
	switch {
	case needNode && m.Node == "":
		return errors.New("no node")
	case !needNode && m.Node != "":
		return errors.New("node not expected")
	case len(m.Node) > maxNameLen:
		return fmt.Errorf("node name of %d bytes", len(m.Node))
	case needID && m.ID == 0:
		return errors.New("no request id")
	case !needID && !anyID && m.ID != 0:
		return errors.New("request id not expected")
	case !vips && len(m.VIPs) > 0, !gone && len(m.Gone) > 0, !healthy && len(m.Healthy) > 0:
		return errors.New("a list this kind does not carry")
	case !leaving && m.Leaving:
		return errors.New("leaving not expected")
	}
	for _, list := range [][]string{m.VIPs, m.Gone} {
		if len(list) > maxNames {
			return fmt.Errorf("%d VIPs, more than %d", len(list), maxNames)
		}
		for _, v := range list {
			if a, err := netip.ParseAddr(v); err != nil || a.String() != v {
				return fmt.Errorf("VIP %q: not an address in canonical form", v)
			}
		}
	}
	if len(m.Healthy) > maxNames {
		return fmt.Errorf("%d frontends, more than %d", len(m.Healthy), maxNames)
	}
	for _, fe := range m.Healthy {
		if fe == "" || len(fe) > maxNameLen {
			return fmt.Errorf("frontend name %q", fe)
		}
	}
	return nil
}
