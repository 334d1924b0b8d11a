package vip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// flakySubscription is a link subscription that fails to start the first
// failStarts times, then starts; the first one that starts dies when die is
// closed, as the kernel side of a real one may (a receive buffer overrun).
// It sends no updates: the watch reads the links after each start anyway.
type flakySubscription struct {
	failStarts int
	die        chan struct{}
	attempts   atomic.Int64
}

func (f *flakySubscription) subscribe(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
	n := f.attempts.Add(1)
	if n <= int64(f.failStarts) {
		return fmt.Errorf("test: subscription %d refused", n)
	}
	die := f.die
	if n > int64(f.failStarts)+1 {
		die = nil // later subscriptions live until stopped
	}
	go func() {
		defer close(ch)
		select {
		case <-done:
		case <-die:
			onErr(errors.New("test: receive failed"))
		}
	}()
	return nil
}

// runWatch runs m's watch with sub until the test ends.
func runWatch(t *testing.T, m *Manager, sub *flakySubscription) {
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		m.watch(ctx, sub.subscribe)
	}()
	t.Cleanup(func() {
		cancel()
		<-watchDone
	})
}

// TestLinkWatchThatCannotStartOrDiesReportsLinkDown drives Watch with a
// subscription that first cannot start, then works, then dies, then works
// again: each failure must turn LinkUp false and reach OnLinkChange, and
// each recovery must read the real state (lo, up) again. The interface read
// is this process's own loopback: nothing is changed.
func TestLinkWatchThatCannotStartOrDiesReportsLinkDown(t *testing.T) {
	changes := make(chan bool, 16)
	var m *Manager
	var mu sync.Mutex
	var linkUpInCallback []bool
	m, err := New(Options{
		OnLinkChange: func(up bool) {
			mu.Lock()
			linkUpInCallback = append(linkUpInCallback, m.LinkUp())
			mu.Unlock()
			changes <- up
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	add(t, m, testVIP(netip.MustParseAddr("198.18.0.100"), "lo"))
	sub := &flakySubscription{failStarts: 2, die: make(chan struct{})}
	runWatch(t, m, sub)

	next := func(what string, want bool) {
		t.Helper()
		select {
		case up := <-changes:
			if up != want {
				t.Fatalf("%s: OnLinkChange(%v), want %v", what, up, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no OnLinkChange(%v) within 10s", what, want)
		}
	}
	next("subscription refused", false)
	next("subscription started after two refusals", true)
	if got := sub.attempts.Load(); got != 3 {
		t.Fatalf("%d subscription attempts before the watch worked, want 3", got)
	}
	close(sub.die)
	next("subscription died", false)
	next("subscription started again", true)
	if !m.LinkUp() {
		t.Fatal("LinkUp false after the watch recovered")
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(linkUpInCallback) != "[false true false true]" {
		t.Fatalf("LinkUp seen in the callbacks = %v, want [false true false true]", linkUpInCallback)
	}
}

// A VIP added while Watch runs has its interface read at once, without
// waiting for a link update: here one that does not exist, so LinkUp turns
// false; removing it turns LinkUp true again. The subscription sends no
// update, so only the change of the set can make Watch read the links.
func TestWatchReadsTheInterfaceOfAnAddedVIP(t *testing.T) {
	changes := make(chan bool, 16)
	m := newManager(t, Options{OnLinkChange: func(up bool) { changes <- up }})
	add(t, m, testVIP(netip.MustParseAddr("198.18.0.100"), "lo"))
	sub := &flakySubscription{}
	runWatch(t, m, sub)
	deadline := time.Now().Add(10 * time.Second)
	for sub.attempts.Load() == 0 { // the first read of lo changes nothing to report
		if time.Now().After(deadline) {
			t.Fatal("the watch did not subscribe within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	absent := add(t, m, testVIP(netip.MustParseAddr("198.18.0.101"), "vipd-absent0"))
	for _, want := range []bool{false, true} {
		select {
		case up := <-changes:
			if up != want {
				t.Fatalf("OnLinkChange(%v), want %v", up, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no OnLinkChange(%v) within 10s", want)
		}
		if !want {
			must(t, m.Remove(absent)) // Remove itself reports it: the set has only lo now
		}
	}
}
