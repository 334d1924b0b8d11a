package bed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// results builds a client history from a start time and one letter per
// 10 ms request: 'o' succeeded, 'x' was refused, 't' timed out.
func results(t0 time.Time, pattern string) *Client {
	c := &Client{Interval: 10 * time.Millisecond}
	for i, r := range pattern {
		end := t0.Add(time.Duration(i+1) * 10 * time.Millisecond)
		res := Result{Start: end.Add(-5 * time.Millisecond), End: end, Backend: "b1"}
		switch r {
		case 'x':
			res.Err = fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
		case 't':
			res.Err = fmt.Errorf("dial: %w", context.DeadlineExceeded)
		}
		c.results = append(c.results, res)
	}
	return c
}

func TestOutageIsTheLongestGapBetweenSuccessesAfterTheFault(t *testing.T) {
	t0 := time.Now()
	at := func(i int) time.Time { return t0.Add(time.Duration(i)*10*time.Millisecond + 5*time.Millisecond) }
	for _, tc := range []struct {
		name    string
		pattern string
		fault   int // index of the request the fault comes just before
		gap     time.Duration
		failed  int
		timeout int
		err     error
	}{
		{"no interruption", "oooooooooo", 3, 10 * time.Millisecond, 0, 0, nil},
		{"one outage", "oooxxtxxoooo", 3, 60 * time.Millisecond, 5, 1, nil},
		{"a flap after recovery counts", "oooxxoottttoo", 3, 50 * time.Millisecond, 6, 4, nil},
		{"no recovery", "oooxxxx", 3, 0, 4, 0, ErrNoRecovery},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := results(t0, tc.pattern)
			o, err := c.Outage(at(tc.fault), t0.Add(time.Hour))
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if o.Gap != tc.gap || o.Failed != tc.failed || o.TimedOut != tc.timeout {
				t.Fatalf("outage %s with %d failed (%d timed out), want %s with %d (%d)", o.Gap, o.Failed, o.TimedOut, tc.gap, tc.failed, tc.timeout)
			}
		})
	}
	if _, err := results(t0, "xxxooo").Outage(at(1), t0.Add(time.Hour)); err == nil {
		t.Fatal("no success before the fault: want an error")
	}
}

// TimedOut tells the errors of real sockets apart: a dial to a closed port
// and a connection the server closes are breaks; a dial whose context ran
// out and a read past its deadline are timeouts.
func TestTimedOutTellsATimeoutFromABreak(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { // accepts and never answers; closes its first connection at once
		defer close(done)
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := 0; ; i++ {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			if i == 0 {
				c.Close()
				continue
			}
			held = append(held, c)
		}
	}()
	defer func() { silent.Close(); <-done }()
	read := func(deadline time.Duration) error {
		c, err := net.Dial("tcp", silent.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(deadline))
		_, err = c.Read(make([]byte, 1))
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	_, ctxErr := (&net.Dialer{}).DialContext(ctx, "tcp", silent.Addr().String())
	_, refused := net.Dial("tcp", closedAddr)
	for _, tc := range []struct {
		name    string
		err     error
		timeout bool
	}{
		{"closed by the server", read(time.Second), false},
		{"refused", refused, false},
		{"read past its deadline", read(20 * time.Millisecond), true},
		{"dial past its context", ctxErr, true},
	} {
		if tc.err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		if got := (Result{Err: fmt.Errorf("get: %w", tc.err)}).TimedOut(); got != tc.timeout {
			t.Errorf("%s (%v): TimedOut %v, want %v", tc.name, tc.err, got, tc.timeout)
		}
	}
}
