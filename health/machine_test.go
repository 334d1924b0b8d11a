package health

import "testing"

func TestMachineGoesDownAfterExactlyFallConsecutiveFailures(t *testing.T) {
	s := machine{rise: 2, fall: 3, healthy: true}
	for i := 1; i < 3; i++ {
		if s.failure() || !s.healthy {
			t.Fatalf("down after %d failures, fall is 3", i)
		}
	}
	if !s.failure() || s.healthy {
		t.Fatal("still up after 3 failures, fall is 3")
	}
	if s.failure() {
		t.Fatal("a 4th failure reported a second transition")
	}
}

func TestMachineComesUpAfterExactlyRiseConsecutiveSuccesses(t *testing.T) {
	s := machine{rise: 3, fall: 1}
	s.success()
	s.success()
	s.failure() // breaks the streak
	s.success()
	if s.success() || s.healthy {
		t.Fatal("up after a broken streak of 2+2 successes, rise is 3")
	}
	if !s.success() || !s.healthy {
		t.Fatal("still down after 3 consecutive successes, rise is 3")
	}
}

func TestMachineConnectSuccessResetsFailuresButNeverRaises(t *testing.T) {
	s := machine{rise: 1, fall: 2, healthy: true}
	s.failure()
	s.connectSucceeded()
	if s.failure() {
		t.Fatal("down after 1 failure following a connect success, fall is 2")
	}
	if !s.failure() {
		t.Fatal("still up after 2 consecutive failures")
	}
	for range 10 {
		s.connectSucceeded()
	}
	if s.healthy || s.successes != 0 {
		t.Fatalf("connect successes changed an unhealthy backend: healthy=%v successes=%d", s.healthy, s.successes)
	}
}

func TestMachineChangingWhileAStreakRunsAgainstTheState(t *testing.T) {
	s := machine{rise: 2, fall: 2, healthy: true}
	steps := []struct {
		op   func() bool
		want bool
	}{
		{s.success, false}, // healthy, no failures
		{s.failure, true},  // healthy, 1 failure: change pending
		{s.failure, false}, // down now, no successes
		{s.success, true},  // unhealthy, 1 success: change pending
		{s.success, false}, // up now
	}
	for i, st := range steps {
		st.op()
		if got := s.changing(); got != st.want {
			t.Fatalf("step %d: changing()=%v, want %v (state %+v)", i, got, st.want, s)
		}
	}
}
