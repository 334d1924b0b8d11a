//go:build linux

package main

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// kernelRelay moves a pair's bytes inside the kernel, so the loop wakes
// only for a connection's start and end: a sockhash holds each socket
// under its peer's cookie, and an sk_skb verdict program on the hash sends
// every segment a socket receives out of the socket stored under the
// receiver's own cookie. This is the in-kernel path issue 12 names
// (BPF sockmap); the verdict counts nothing, as a full version's live
// byte counters and idle timeout could read each socket's TCP_INFO.
type kernelRelay struct {
	peers   *ebpf.Map // socket cookie -> the peer socket
	verdict *ebpf.Program
}

// maxLinkedSockets bounds the sockhash: two per connection, more than the
// open-file limit lets one process hold.
const maxLinkedSockets = 1 << 16

// The verdicts (enum sk_action).
const (
	skDrop = 0
	skPass = 1 // the segment goes to its own socket
)

func newKernelRelay() (*kernelRelay, error) {
	peers, err := ebpf.NewMap(&ebpf.MapSpec{Name: "relay_peers", Type: ebpf.SockHash, KeySize: 8, ValueSize: 8, MaxEntries: maxLinkedSockets})
	if err != nil {
		return nil, fmt.Errorf("sockhash: %w", err)
	}
	verdict, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:       "relay_verdict",
		Type:       ebpf.SkSKB,
		AttachType: ebpf.AttachSkSKBVerdict,
		License:    "GPL",
		Instructions: asm.Instructions{
			// A segment without data (a FIN) stays with its socket, where
			// the loop sees the end: redirected, the kernel worker's send
			// of zero bytes returns 0, which it takes for a broken pipe
			// and reports as EPIPE on the peer.
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // skb->len
			asm.JNE.Imm(asm.R2, 0, "redirect"),
			asm.Mov.Imm(asm.R0, skPass),
			asm.Return(),
			// key := bpf_get_socket_cookie(skb), on the stack
			asm.Mov.Reg(asm.R6, asm.R1).WithSymbol("redirect"),
			asm.FnGetSocketCookie.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			// bpf_sk_redirect_hash(skb, peers, &key, 0): out of the peer
			// (flag 0 is its egress); SK_DROP when there is none
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.LoadMapPtr(asm.R2, peers.FD()),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnSkRedirectHash.Call(),
			asm.JNE.Imm(asm.R0, skDrop, "done"),
			// No peer (not linked yet, or closed): keep the bytes on
			// this socket rather than drop them.
			asm.Mov.Imm(asm.R0, skPass),
			asm.Return().WithSymbol("done"),
		},
	})
	if err != nil {
		peers.Close()
		return nil, fmt.Errorf("verdict program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: peers.FD(), Program: verdict, Attach: ebpf.AttachSkSKBVerdict}); err != nil {
		verdict.Close()
		peers.Close()
		return nil, fmt.Errorf("attach the verdict to the sockhash: %w", err)
	}
	return &kernelRelay{peers: peers, verdict: verdict}, nil
}

// link hands a connected pair to the kernel. Bytes that arrived before it
// wait in a socket's receive queue, which the verdict only reads when
// more arrive: setting SO_RCVLOWAT makes TCP signal the queued data to
// the verdict at once, in order, under the socket's lock, so none is
// copied by the loop and none overtakes another.
//
// The hash refuses a socket that is not established (a client whose FIN
// came before the backend answered); the caller then copies the pair
// itself. A socket already added stays: the verdict passes what it
// cannot redirect to the socket's own queue, where the loop reads it.
func (k *kernelRelay) link(a, b *side) error {
	for _, s := range []*side{a, b} {
		sent, err := sendStream(s.fd)
		if err != nil {
			return err
		}
		s.sent = sent
	}
	// The first update puts b in the hash (under a's cookie): until a is
	// in too the verdict passes b's bytes to b's own queue, and a backend
	// rarely speaks before its client. a, which the hash may refuse, is
	// second.
	for _, s := range []*side{a, b} {
		cookie, err := unix.GetsockoptUint64(s.fd, unix.SOL_SOCKET, unix.SO_COOKIE)
		if err != nil {
			return fmt.Errorf("socket cookie: %w", err)
		}
		// Adding s's peer to the hash under s's cookie attaches the
		// verdict to the peer.
		if err := k.peers.Update(cookie, uint64(s.peer.fd), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("sockhash update: %w", err)
		}
	}
	for _, s := range []*side{a, b} {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1); err != nil {
			return fmt.Errorf("signal the queued bytes: %w", err)
		}
	}
	return nil
}

// sendStream is how many bytes fd has put into its send stream: acked, in
// flight or queued (TCP_INFO counts an active opener's SYN as acked, so
// only differences mean anything).
func sendStream(fd int) (uint64, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("tcp info: %w", err)
	}
	queued, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0, fmt.Errorf("send queue: %w", err)
	}
	return info.Bytes_acked + uint64(queued), nil
}

// flushed reports whether every byte src received (it has seen its FIN)
// is in dst's send stream. The verdict queues what it redirects for a
// kernel worker to send, so src's FIN can reach the loop before the last
// of its bytes reach dst; a shutdown of dst then would cut the stream
// short (the worker's send fails on a shut socket).
func flushed(src, dst *side) (bool, error) {
	in, err := unix.GetsockoptTCPInfo(src.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return false, fmt.Errorf("tcp info: %w", err)
	}
	out, err := sendStream(dst.fd)
	if err != nil {
		return false, err
	}
	// The FIN takes a sequence number of its own in bytes_received; a
	// reset (a hang-up without a FIN) may leave it at 0.
	want := in.Bytes_received
	if want > 0 {
		want--
	}
	return out-dst.sent >= want, nil
}

func (k *kernelRelay) close() error {
	return errors.Join(k.verdict.Close(), k.peers.Close())
}
