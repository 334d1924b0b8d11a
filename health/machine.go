package health

// machine is the rise/fall state of one backend. It is not safe for
// concurrent use; the backend's mutex guards it.
type machine struct {
	rise, fall int
	healthy    bool
	successes  int // consecutive successes (active checks only)
	failures   int // consecutive failures (active checks and ConnectFailed)
}

// success records a successful active check and reports whether the
// backend just became healthy (after exactly rise consecutive successes).
func (s *machine) success() bool {
	s.failures = 0
	s.successes++
	if !s.healthy && s.successes >= s.rise {
		s.healthy = true
		return true
	}
	return false
}

// failure records a failed check (active or passive) and reports whether
// the backend just became unhealthy (after exactly fall consecutive failures).
func (s *machine) failure() bool {
	s.successes = 0
	s.failures++
	if s.healthy && s.failures >= s.fall {
		s.healthy = false
		return true
	}
	return false
}

// connectSucceeded records that the proxy connected to the backend. On a
// healthy backend it ends a failure streak: the last failure was transient.
// It never counts toward rise: a completed TCP handshake says nothing about
// whether the application behind it answers correctly (a wedged apiserver
// still accepts connections), so only an active check may bring a backend
// back. On an unhealthy backend it changes nothing.
func (s *machine) connectSucceeded() {
	if s.healthy {
		s.failures = 0
	}
}

// changing reports whether a state change is pending, when checks run at
// the fast interval.
func (s *machine) changing() bool {
	if s.healthy {
		return s.failures > 0
	}
	return s.successes > 0
}
