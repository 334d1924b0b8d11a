package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

// notifySocket is the test's own NOTIFY_SOCKET: it records every datagram
// a daemon sends, in order.
type notifySocket struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string // guarded by mu
}

// listenNotify binds a datagram socket and points NOTIFY_SOCKET at it for
// the rest of the test.
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "vipd-sd") // short: socket paths have a 108-byte limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{conn: conn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return // closed by the cleanup
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	t.Setenv("NOTIFY_SOCKET", path)
	return s
}

func (s *notifySocket) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// waitMessage waits for a datagram with an assignment (a line) for which
// match holds and returns the datagram's index.
func (s *notifySocket) waitMessage(t *testing.T, what string, match func(line string) bool) int {
	t.Helper()
	idx := -1
	waitFor(t, what, func() bool {
		for i, m := range s.messages() {
			if slices.ContainsFunc(strings.Split(m, "\n"), match) {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

func isLine(want string) func(string) bool { return func(l string) bool { return l == want } }

func statusWith(part string) func(string) bool {
	return func(l string) bool { return strings.HasPrefix(l, "STATUS=") && strings.Contains(l, part) }
}

// Under systemd (Type=notify, WatchdogSec=) vipd says READY=1 once it
// serves, keeps a readable STATUS= that follows the backends' health,
// pings the watchdog while its loops run, and says STOPPING=1 on shutdown.
func TestSystemdSeesReadyStatusWatchdogAndStopping(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "400000")
	n := startNode(t, fastHealth)

	ready := sock.waitMessage(t, "READY=1", isLine("READY=1"))
	// READY=1 came after the listeners were bound and the cluster formed.
	if resp, err := http.Get("http://" + n.admin + "/healthz"); err != nil {
		t.Fatalf("admin listener after READY=1: %v", err)
	} else {
		resp.Body.Close()
	}
	if got := n.answer(t); got != "a" && got != "b" {
		t.Fatalf("frontend after READY=1 answered %q", got)
	}
	if !strings.Contains(sock.messages()[ready], "\nSTATUS=") {
		t.Errorf("READY=1 without the first status: %q", sock.messages()[ready])
	}
	if wd := sock.waitMessage(t, "WATCHDOG=1", isLine("WATCHDOG=1")); wd < ready {
		t.Errorf("WATCHDOG=1 (message %d) before READY=1 (message %d)", wd, ready)
	}
	sock.waitMessage(t, "status as leader with both backends healthy", func(l string) bool {
		return strings.HasPrefix(l, "STATUS=leader, term ") && strings.HasSuffix(l, "; healthy backends: web 2/2")
	})

	n.killBackend[0]()
	down := sock.waitMessage(t, "status with one backend down", statusWith("healthy backends: web 1/2"))
	if down < ready {
		t.Errorf("status %d before READY=1 %d", down, ready)
	}

	if err := n.stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	stopping := sock.waitMessage(t, "STOPPING=1", isLine("STOPPING=1"))
	msgs := sock.messages()
	t.Logf("systemd got %q", msgs)
	if stopping < down {
		t.Errorf("STOPPING=1 at %d before the last status %d: %q", stopping, down, msgs)
	}
	// STATUS= is sent on change, never the same line twice in a row.
	var last string
	for _, m := range msgs {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "STATUS=") {
				if l == last {
					t.Errorf("%q sent twice in a row", l)
				}
				last = l
			}
		}
	}
}

// READY=1 waits until the node formed or joined its cluster: a node that
// expects two voters says it is waiting, and READY=1 follows only once the
// second node joined.
func TestReadyWaitsUntilTheClusterFormed(t *testing.T) {
	// Runs last: memberlist.Shutdown does not wait for its probes, which
	// end on their own timeouts; TestMain's leak check must not see them.
	t.Cleanup(func() {
		waitFor(t, "memberlist's goroutines to end after its Shutdown", func() bool { return goleak.Find() == nil })
	})
	sock := listenNotify(t)
	first := launchNode(t, "one", "bootstrap_expect: 2", fastHealth)
	sock.waitMessage(t, "the waiting status", statusWith("waiting to form or join the cluster"))
	if msgs := sock.messages(); msgs[0] != "STATUS=waiting to form or join the cluster" {
		t.Fatalf("first message %q, want the waiting status before anything else", msgs[0])
	}
	if first.d.node.Clustered() {
		t.Fatal("one node of bootstrap_expect 2 formed a cluster alone")
	}

	// Both daemons report to the same socket from here on.
	launchNode(t, "two", fmt.Sprintf("bootstrap_expect: 2, join: [%s]", first.gossip), fastHealth)
	sock.waitMessage(t, "READY=1 after the second node joined", isLine("READY=1"))
	if !first.d.node.Clustered() {
		t.Error("READY=1 before the node has Raft state")
	}
	for _, m := range sock.messages() {
		if strings.Contains(m, "WATCHDOG") {
			t.Errorf("watchdog ping %q without WATCHDOG_USEC", m)
		}
	}
}

// recordingNotifier is a notifier whose datagrams go to a slice.
func recordingNotifier(t *testing.T) (*notifier, *[]string) {
	var sent []string
	n := &notifier{log: zaptest.NewLogger(t), stopped: make(chan struct{})}
	n.send = func(state string) error { sent = append(sent, state); return nil }
	return n, &sent
}

func TestNotifierSendsStatusOnlyOnChangeAndNothingAfterStopping(t *testing.T) {
	n, sent := recordingNotifier(t)
	n.ready("leader, term 2")
	n.status("leader, term 2")
	n.status("follower of b, term 3")
	n.status("follower of b, term 3")
	n.stopping()
	n.stopping()
	n.status("leader, term 4")
	n.notify("WATCHDOG=1")
	want := []string{
		"READY=1\nSTATUS=leader, term 2",
		"STATUS=follower of b, term 3",
		"STOPPING=1\nSTATUS=stopping: releasing the VIP, handing over, draining",
	}
	if !slices.Equal(*sent, want) {
		t.Errorf("sent %q\nwant %q", *sent, want)
	}
}

// A reload is one call: RELOADING=1 (with the monotonic time systemd
// matches it by) while it runs, READY=1 after, also when it failed.
func TestNotifierWrapsAReload(t *testing.T) {
	n, sent := recordingNotifier(t)
	ran := false
	if err := n.reloading(func() error {
		ran = true
		if len(*sent) != 1 || !strings.HasPrefix((*sent)[0], "RELOADING=1\nMONOTONIC_USEC=") {
			t.Errorf("during the reload systemd got %q", *sent)
		}
		return nil
	}); err != nil || !ran {
		t.Fatalf("reload: ran %v, err %v", ran, err)
	}
	if got := (*sent)[1:]; !slices.Equal(got, []string{"READY=1"}) {
		t.Errorf("after a reload %q, want READY=1", got)
	}
	*sent = nil
	bad := errors.New("pools[0].backends[1].address: bad port")
	if err := n.reloading(func() error { return bad }); !errors.Is(err, bad) {
		t.Fatalf("failed reload returned %v", err)
	}
	if len(*sent) != 2 || (*sent)[1] != "READY=1\nSTATUS=reload failed, running the previous config: "+bad.Error() {
		t.Errorf("after a failed reload %q", *sent)
	}
	var usec int64
	if _, err := fmt.Sscanf(strings.Split((*sent)[0], "MONOTONIC_USEC=")[1], "%d", &usec); err != nil || usec <= 0 {
		t.Errorf("MONOTONIC_USEC in %q: %d %v", (*sent)[0], usec, err)
	}
}

// The watchdog vouches for the loops: a loop that does not come back to
// its select is named, the others are not.
func TestLoopProbesNameTheLoopThatDoesNotAnswer(t *testing.T) {
	p := newLoopProbes()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	serve := func(probe loopProbe) {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-probe:
				}
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	serve(p.fitness)
	serve(p.leadership)
	// intent is stuck: nothing receives from its probe.
	if got := p.stuck(context.Background(), time.Now().Add(time.Second)); !slices.Equal(got, []string{"intent"}) {
		t.Errorf("stuck = %v, want [intent]", got)
	}
	serve(p.intent)
	if got := p.stuck(context.Background(), time.Now().Add(10*time.Second)); len(got) != 0 {
		t.Errorf("stuck = %v with every loop running", got)
	}
}
