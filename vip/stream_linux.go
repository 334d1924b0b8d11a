package vip

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// The pause before a failed netlink subscription (or link watch) is tried
// again starts short, so a one-off failure costs little, and doubles up to a
// ceiling, so a lasting one neither spins nor waits long once it clears.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// subscribeFunc opens one netlink subscription that sends to ch until done is
// closed or it fails, then closes ch. It may call onErr from its goroutine,
// before closing ch on a fatal error, and for errors it survives.
type subscribeFunc[T any] func(ch chan<- T, done <-chan struct{}, onErr func(error)) error

func subscribeAddrs(ch chan<- netlink.AddrUpdate, done <-chan struct{}, onErr func(error)) error {
	return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
}

func subscribeLinks(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
	return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr})
}

// keepRunning runs attempt until ctx ends, and again after each failure,
// after a pause from retryMin doubling to retryMax. attempt returns nil when
// ctx ends, else why it failed; it calls started once it works, which resets
// the pause. One failure episode logs its first error and its recovery, not
// every retry.
func keepRunning(ctx context.Context, log *zap.Logger, what string, attempt func(started func()) error) {
	pause, failing := retryMin, false
	started := func() {
		pause = retryMin
		if failing {
			failing = false
			log.Info("vip netlink watch works again", zap.String("kind", what))
		}
	}
	for {
		err := attempt(started)
		if ctx.Err() != nil {
			return
		}
		if !failing {
			failing = true
			log.Error("vip netlink watch failed; retrying", zap.String("kind", what), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, retryMax)
	}
}

// follow runs one subscription until ctx ends (it returns nil) or the
// subscription cannot start, ends, or handle fails (it returns why). handle
// gets the zero T first, meaning "updates may have been missed: re-read the
// state", then every update, and the zero T again on every receive from
// reread (nil: never); started is called once the first handle call has
// succeeded.
func follow[T any](ctx context.Context, log *zap.Logger, what string, sub subscribeFunc[T], reread <-chan struct{}, started func(), handle func(T) error) error {
	ch := make(chan T, 64)
	done := make(chan struct{})
	// lastErr is written only by the subscription's goroutine before it
	// closes ch and read only after ch is closed: the close orders the two.
	var lastErr error
	onErr := func(err error) {
		lastErr = err
		if ctx.Err() == nil {
			log.Warn("vip netlink subscription error", zap.String("kind", what), zap.Error(err))
		}
	}
	if err := sub(ch, done, onErr); err != nil {
		close(done)
		return fmt.Errorf("subscribe to %s updates: %w", what, needsCap(err, "CAP_NET_ADMIN"))
	}
	// Closing done closes the socket and lets the receiver goroutine finish:
	// it may be blocked sending to ch, so ch is drained until it is closed.
	defer func() {
		close(done)
		for range ch {
		}
	}()
	var next T // the zero value first: "re-read the state"
	for first := true; ; first = false {
		if err := handle(next); err != nil {
			return err
		}
		if first {
			started()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-reread:
			next = *new(T)
		case u, ok := <-ch:
			if !ok {
				if lastErr == nil {
					lastErr = errors.New("closed by the kernel side")
				}
				return fmt.Errorf("%s subscription ended: %w", what, lastErr)
			}
			next = u
		}
	}
}

// stream keeps a netlink subscription open until its context ends and hands
// the updates to C. After every (re)subscription it sends a zero T first,
// meaning "updates may have been missed: re-read the state".
type stream[T any] struct {
	C  chan T
	wg sync.WaitGroup
}

// startStream starts the goroutine that owns the subscription; it ends when
// ctx is done. Call wait after that to be sure it has.
func startStream[T any](ctx context.Context, log *zap.Logger, what string, sub subscribeFunc[T]) *stream[T] {
	s := &stream[T]{C: make(chan T)}
	send := func(u T) error {
		select {
		case s.C <- u:
		case <-ctx.Done(): // follow sees it next and returns
		}
		return nil
	}
	s.wg.Go(func() {
		keepRunning(ctx, log, what+" subscription", func(started func()) error {
			return follow(ctx, log, what, sub, nil, started, send)
		})
	})
	return s
}

// wait returns once the subscription goroutine has ended.
func (s *stream[T]) wait() { s.wg.Wait() }
