package bed

import (
	"strings"
	"testing"
	"time"
)

// A VIP that moved during a read round shows on both nodes in that round
// only; two holders count when both rounds saw both.
func TestViolationsNeedBothReadRounds(t *testing.T) {
	t0 := time.Now()
	s := &Sampler{interval: 10 * time.Millisecond, exempt: map[string][]span{}}
	add := func(i int, holders, both string) {
		s.samples = append(s.samples, Sample{
			At:      t0.Add(time.Duration(i) * 10 * time.Millisecond),
			Holders: strings.Fields(holders), Both: strings.Fields(both),
		})
	}
	add(0, "n1", "n1")
	add(1, "n1 n2", "n2") // moved from n1 to n2 between the rounds
	add(2, "n2", "n2")
	if v := s.Violations(); len(v) != 0 {
		t.Fatalf("a move seen mid-round counted as two holders: %v", v)
	}
	add(3, "n2 n3", "n2 n3")
	add(4, "n2 n3", "n2 n3")
	v := s.Violations()
	if len(v) != 1 || strings.Join(v[0].Holders, "+") != "n2+n3" || v[0].To.Sub(v[0].From) != 10*time.Millisecond {
		t.Fatalf("want one 10 ms overlap of n2+n3, got %v", v)
	}
	s.exempt["n3"] = []span{{from: t0}}
	if v := s.Violations(); len(v) != 0 {
		t.Fatalf("an exempt holder counted: %v", v)
	}
}
