package bed

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// FailoverPhases are the steps of a failover on the node that takes the
// VIP, in order, each with the message of vipd's (or raft's) log event
// that marks it.
var FailoverPhases = []struct{ Name, Msg string }{
	{"detected", "heartbeat timeout reached, starting election"},
	{"candidate", "entering candidate state"},
	{"won", "election won"},
	{"confirmed", "leadership event"},
	{"claimed", "vip claimed"},
	{"announced", "vip announced"},
}

// logEvent is the part of a vipd JSON log line the phases need.
type logEvent struct {
	TS     string `json:"ts"`
	Msg    string `json:"msg"`
	Leader *bool  `json:"leader"`
}

// Phases reads a vipd log for the failover that began at since and
// returns when each of FailoverPhases happened there (a phase that did not
// is missing). candidate is the last campaign before the won election, so
// candidate→won is the round that won and detected→candidate the ones
// refused before it. Times have the log's millisecond resolution.
func Phases(logPath string, since time.Time) (map[string]time.Time, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, fmt.Errorf("read phases: %w", err)
	}
	defer f.Close()
	got := map[string]time.Time{}
	floor := since.Truncate(time.Millisecond)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var e logEvent
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", e.TS)
		if err != nil || at.Before(floor) {
			continue
		}
		for _, p := range FailoverPhases {
			if !strings.EqualFold(e.Msg, p.Msg) {
				continue
			}
			_, seen := got[p.Name]
			_, won := got["won"]
			switch {
			case p.Name == "confirmed" && (e.Leader == nil || !*e.Leader):
			case p.Name == "candidate" && !won: // the latest campaign until one is won
				got[p.Name] = at
			case !seen:
				got[p.Name] = at
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read phases from %s: %w", logPath, err)
	}
	return got, nil
}
