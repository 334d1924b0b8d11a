package vip

import (
	"context"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// resubscribeDelay is the pause before a netlink subscription that the kernel
// side ended (for example after a receive buffer overrun) is opened again.
const resubscribeDelay = 500 * time.Millisecond

// subscribeFunc opens one netlink subscription that sends to ch until done is
// closed, then closes ch.
type subscribeFunc[T any] func(ch chan<- T, done <-chan struct{}, onErr func(error)) error

// stream keeps a netlink subscription open until its context ends and hands
// the updates to C. After every (re)subscription it sends a zero T first,
// meaning "updates may have been missed: re-read the state".
type stream[T any] struct {
	C  chan T
	wg sync.WaitGroup
}

func addrStream(ctx context.Context, log *zap.Logger) *stream[netlink.AddrUpdate] {
	return startStream(ctx, log, "address", func(ch chan<- netlink.AddrUpdate, done <-chan struct{}, onErr func(error)) error {
		return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
	})
}

func linkStream(ctx context.Context, log *zap.Logger) *stream[netlink.LinkUpdate] {
	return startStream(ctx, log, "link", func(ch chan<- netlink.LinkUpdate, done <-chan struct{}, onErr func(error)) error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr})
	})
}

// startStream starts the goroutine that owns the subscription; it ends when
// ctx is done. Call wait after that to be sure it has.
func startStream[T any](ctx context.Context, log *zap.Logger, what string, sub subscribeFunc[T]) *stream[T] {
	s := &stream[T]{C: make(chan T)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for s.runOnce(ctx, log, what, sub) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(resubscribeDelay):
			}
		}
	}()
	return s
}

// runOnce runs one subscription; it reports whether to subscribe again.
func (s *stream[T]) runOnce(ctx context.Context, log *zap.Logger, what string, sub subscribeFunc[T]) bool {
	ch := make(chan T, 64)
	done := make(chan struct{})
	onErr := func(err error) {
		if ctx.Err() == nil {
			log.Warn("vip netlink subscription error", zap.String("kind", what), zap.Error(err))
		}
	}
	if err := sub(ch, done, onErr); err != nil {
		close(done)
		log.Error("vip netlink subscribe failed", zap.String("kind", what), zap.Error(needsCap(err, "CAP_NET_ADMIN")))
		return ctx.Err() == nil
	}
	// stop closes the socket and lets the receiver goroutine finish: it may
	// be blocked sending to ch, so ch is drained until it is closed.
	stop := func() {
		close(done)
		for range ch {
		}
	}
	var next T // the zero value first: "re-read the state"
	for {
		select {
		case <-ctx.Done():
			stop()
			return false
		case s.C <- next:
		}
		select {
		case <-ctx.Done():
			stop()
			return false
		case u, ok := <-ch:
			if !ok {
				close(done)
				log.Warn("vip netlink subscription ended; subscribing again", zap.String("kind", what))
				return true
			}
			next = u
		}
	}
}

// wait returns once the subscription goroutine has ended.
func (s *stream[T]) wait() { s.wg.Wait() }
