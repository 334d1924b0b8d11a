package bed

import (
	"errors"
	"testing"
	"time"
)

// results builds a client history from a start time and one letter per
// 10 ms request: 'o' succeeded, 'x' failed.
func results(t0 time.Time, pattern string) *Client {
	c := &Client{Interval: 10 * time.Millisecond}
	for i, r := range pattern {
		end := t0.Add(time.Duration(i+1) * 10 * time.Millisecond)
		res := Result{Start: end.Add(-5 * time.Millisecond), End: end, Backend: "b1"}
		if r == 'x' {
			res.Err = errors.New("timeout")
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
		err     error
	}{
		{"no interruption", "oooooooooo", 3, 10 * time.Millisecond, 0, nil},
		{"one outage", "oooxxxxxoooo", 3, 60 * time.Millisecond, 5, nil},
		{"a flap after recovery counts", "oooxxooxxxxoo", 3, 50 * time.Millisecond, 6, nil},
		{"no recovery", "oooxxxx", 3, 0, 4, ErrNoRecovery},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := results(t0, tc.pattern)
			o, err := c.Outage(at(tc.fault), t0.Add(time.Hour))
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if o.Gap != tc.gap || o.Failed != tc.failed {
				t.Fatalf("outage %s with %d failed, want %s with %d", o.Gap, o.Failed, tc.gap, tc.failed)
			}
		})
	}
	if _, err := results(t0, "xxxooo").Outage(at(1), t0.Add(time.Hour)); err == nil {
		t.Fatal("no success before the fault: want an error")
	}
}
