package lease

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func frame(body string) []byte {
	b := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	copy(b[4:], body)
	return b
}

func TestMessagesRoundTrip(t *testing.T) {
	for _, m := range []Message{
		{Kind: KindRequest, ID: 7, Node: "lb-1", VIPs: []string{"198.18.0.100", "2001:2::100"}, Healthy: []string{"web"}},
		{Kind: KindRequest, ID: 1, Node: "lb-2"},
		{Kind: KindAnswer, ID: 7, VIPs: []string{"198.18.0.100"}, Gone: []string{"198.18.0.101"}},
		{Kind: KindRelease, ID: 4, Node: "lb-3", VIPs: []string{"198.18.0.102"}, Leaving: true},
		{Kind: KindNotLeader},
	} {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatalf("write %+v: %v", m, err)
		}
		got, err := ReadMessage(&buf)
		if err != nil {
			t.Fatalf("read %+v: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip: got %+v, want %+v", got, m)
		}
	}
}

func TestGarbageIsMalformed(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty frame":          frame(""),
		"too long":             {0xff, 0xff, 0xff, 0xff},
		"not json":             frame("hello"),
		"unknown kind":         frame(`{"k":"grant"}`),
		"unknown field":        frame(`{"k":"not_leader","x":1}`),
		"request without id":   frame(`{"k":"request","n":"lb-1"}`),
		"request without node": frame(`{"k":"request","i":3}`),
		"answer with node":     frame(`{"k":"answer","i":3,"n":"lb-1"}`),
		"not leader with id":   frame(`{"k":"not_leader","i":3}`),
		"VIP not an address":   frame(`{"k":"request","i":3,"n":"lb-1","v":["web"]}`),
		"VIP not canonical":    frame(`{"k":"request","i":3,"n":"lb-1","v":["2001:2:0::100"]}`),
		"gone on a request":    frame(`{"k":"request","i":3,"n":"lb-1","g":["198.18.0.1"]}`),
		"leaving on request":   frame(`{"k":"request","i":3,"n":"lb-1","l":true}`),
		"empty frontend":       frame(`{"k":"request","i":3,"n":"lb-1","h":[""]}`),
		"two values":           frame(`{"k":"not_leader"}{"k":"not_leader"}`),
		"long node":            frame(`{"k":"release","n":"` + strings.Repeat("a", 129) + `"}`),
	} {
		if _, err := ReadMessage(bytes.NewReader(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func TestTruncatedFrameIsAnIOError(t *testing.T) {
	in := frame(`{"k":"not_leader"}`)
	if _, err := ReadMessage(bytes.NewReader(in[:len(in)-1])); !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrMalformed) {
		t.Errorf("truncated body: err %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := ReadMessage(bytes.NewReader(nil)); !errors.Is(err, io.EOF) {
		t.Errorf("no bytes: err %v, want io.EOF", err)
	}
}

// FuzzReadMessage feeds arbitrary bytes to the lease protocol's decoder: it
// never panics, never accepts a frame longer than MaxFrame, and what it
// accepts is a message that check passes and that encodes back to a frame
// decoding to the same message.
func FuzzReadMessage(f *testing.F) {
	f.Add(frame(`{"k":"request","i":1,"n":"lb-1","v":["198.18.0.100"],"h":["web"]}`))
	f.Add(frame(`{"k":"answer","i":1,"v":["198.18.0.100"],"g":["198.18.0.101"]}`))
	f.Add(frame(`{"k":"release","n":"lb-1","v":["2001:2::100"],"l":true}`))
	f.Add(frame(`{"k":"not_leader"}`))
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ReadMessage(bytes.NewReader(in))
		if err != nil {
			return
		}
		if n := binary.BigEndian.Uint32(in); n > MaxFrame {
			t.Fatalf("accepted a frame of %d bytes", n)
		}
		if err := m.check(); err != nil {
			t.Fatalf("accepted %+v, which check refuses: %v", m, err)
		}
		var buf bytes.Buffer
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		again, err := ReadMessage(&buf)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-decode of %+v: %+v, %v", m, again, err)
		}
	})
}
