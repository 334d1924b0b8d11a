package placement

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

func fit(name string, healthy ...string) Member {
	return Member{Name: name, Fit: true, Healthy: healthy}
}

func spread(addr string, prefer ...string) VIP {
	return VIP{Address: addr, Placement: Spread, Prefer: prefer}
}

func TestPlace(t *testing.T) {
	three := []Member{fit("a"), fit("b"), fit("c")}
	for _, tc := range []struct {
		name  string
		in    Input
		want  map[string]string
		moves []Move
	}{
		{
			name:  "three new VIPs spread one per node",
			in:    Input{VIPs: []VIP{spread("v1"), spread("v2"), spread("v3")}, Members: three},
			want:  map[string]string{"v1": "a", "v2": "b", "v3": "c"},
			moves: []Move{{"v1", "", "a", ReasonNew}, {"v2", "", "b", ReasonNew}, {"v3", "", "c", ReasonNew}},
		},
		{
			name: "sticky: an uneven but fit assignment stays in manual mode",
			in: Input{VIPs: []VIP{spread("v1"), spread("v2"), spread("v3")}, Members: three,
				Current: map[string]string{"v1": "a", "v2": "a", "v3": "a"}, Rebalance: Manual},
			want: map[string]string{"v1": "a", "v2": "a", "v3": "a"},
		},
		{
			name:  "leader VIPs are left alone",
			in:    Input{VIPs: []VIP{{Address: "v0", Placement: Leader}, spread("v1")}, Members: three},
			want:  map[string]string{"v1": "a"},
			moves: []Move{{"v1", "", "a", ReasonNew}},
		},
		{
			name: "an unfit node's VIP goes to the least loaded fit node",
			in: Input{VIPs: []VIP{spread("v1"), spread("v2"), spread("v3")},
				Members: []Member{fit("a"), {Name: "b", Fit: false}, fit("c")},
				Current: map[string]string{"v1": "a", "v2": "b", "v3": "a"}},
			want:  map[string]string{"v1": "a", "v2": "c", "v3": "a"},
			moves: []Move{{"v2", "b", "c", ReasonUnfit}},
		},
		{
			name: "a node that left: its VIP moves, reason gone",
			in: Input{VIPs: []VIP{spread("v1"), spread("v2")}, Members: []Member{fit("a"), fit("b")},
				Current: map[string]string{"v1": "a", "v2": "z"}},
			want:  map[string]string{"v1": "a", "v2": "b"},
			moves: []Move{{"v2", "z", "b", ReasonGone}},
		},
		{
			name: "witness and maintenance are never chosen",
			in: Input{VIPs: []VIP{spread("v1"), spread("v2")},
				Members: []Member{{Name: "a", Fit: true, Witness: true}, {Name: "b", Fit: true, Maintenance: true}, fit("c")},
				Current: map[string]string{"v2": "b"}},
			want:  map[string]string{"v1": "c", "v2": "c"},
			moves: []Move{{"v1", "", "c", ReasonNew}, {"v2", "b", "c", ReasonUnfit}},
		},
		{
			name:  "no eligible node: unassigned",
			in:    Input{VIPs: []VIP{spread("v1")}, Members: []Member{{Name: "a", Witness: true, Fit: true}}, Current: map[string]string{"v1": "a"}},
			want:  map[string]string{"v1": ""},
			moves: []Move{{"v1", "a", "", ReasonUnfit}},
		},
		{
			name: "healthy backends per frontend of the VIP",
			in: Input{VIPs: []VIP{{Address: "v1", Placement: Spread, Frontends: []string{"web", "api"}}},
				Members: []Member{fit("a", "web"), fit("b", "web", "api")}},
			want:  map[string]string{"v1": "b"},
			moves: []Move{{"v1", "", "b", ReasonNew}},
		},
		{
			name:  "prefer: first eligible preferred node, a node not yet a member skipped",
			in:    Input{VIPs: []VIP{spread("v1", "later", "c", "b"), spread("v2", "c")}, Members: three},
			want:  map[string]string{"v1": "c", "v2": "c"},
			moves: []Move{{"v1", "", "c", ReasonNew}, {"v2", "", "c", ReasonNew}},
		},
		{
			name: "prefer does not pull a fit VIP back (sticky)",
			in: Input{VIPs: []VIP{spread("v1", "a")}, Members: three,
				Current: map[string]string{"v1": "b"}, Rebalance: Auto},
			want: map[string]string{"v1": "b"},
		},
		{
			name: "auto: one VIP at a time from the most loaded to the least loaded",
			in: Input{VIPs: []VIP{spread("v1"), spread("v2"), spread("v3")}, Members: three,
				Current: map[string]string{"v1": "a", "v2": "a", "v3": "a"}, Rebalance: Auto},
			want:  map[string]string{"v1": "b", "v2": "a", "v3": "a"},
			moves: []Move{{"v1", "a", "b", ReasonRebalance}},
		},
		{
			name: "auto: uneven by one is even enough",
			in: Input{VIPs: []VIP{spread("v1"), spread("v2"), spread("v3")}, Members: []Member{fit("a"), fit("b")},
				Current: map[string]string{"v1": "a", "v2": "a", "v3": "b"}, Rebalance: Auto},
			want: map[string]string{"v1": "a", "v2": "a", "v3": "b"},
		},
		{
			name: "auto: waits while a move is in flight",
			in: Input{VIPs: []VIP{spread("v1"), spread("v2"), spread("v3")}, Members: three,
				Current: map[string]string{"v1": "a", "v2": "a", "v3": "a"}, Rebalance: Auto, Moving: true},
			want: map[string]string{"v1": "a", "v2": "a", "v3": "a"},
		},
		{
			name: "auto: a VIP on a node it prefers stays; another moves",
			in: Input{VIPs: []VIP{spread("v1", "a"), spread("v2"), spread("v3", "a")}, Members: three,
				Current: map[string]string{"v1": "a", "v2": "a", "v3": "a"}, Rebalance: Auto},
			want:  map[string]string{"v1": "a", "v2": "b", "v3": "a"},
			moves: []Move{{"v2", "a", "b", ReasonRebalance}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Place(tc.in)
			if !reflect.DeepEqual(got.Assignment, tc.want) {
				t.Errorf("assignment %v, want %v", got.Assignment, tc.want)
			}
			if !reflect.DeepEqual(got.Moves, tc.moves) {
				t.Errorf("moves %v, want %v", got.Moves, tc.moves)
			}
		})
	}
}

// randomInput is a random cluster: members with random roles, fitness and
// healthy frontends, spread and leader VIPs with random frontends and
// preferences (some naming nodes that never joined), and a random current
// assignment (some on nodes that left).
func randomInput(r *rand.Rand, simple bool) Input {
	fes := []string{"web", "api"}
	var in Input
	n := 1 + r.IntN(6)
	for i := range n {
		m := Member{Name: fmt.Sprintf("n%d", i), Fit: true, Healthy: fes}
		if !simple {
			m.Witness = r.IntN(6) == 0
			m.Maintenance = r.IntN(6) == 0
			m.Fit = r.IntN(5) != 0
			m.Healthy = nil
			for _, fe := range fes {
				if r.IntN(4) != 0 {
					m.Healthy = append(m.Healthy, fe)
				}
			}
		}
		in.Members = append(in.Members, m)
	}
	in.Current = map[string]string{}
	for i := range 1 + r.IntN(9) {
		v := VIP{Address: fmt.Sprintf("v%d", i), Placement: Spread}
		if !simple {
			if r.IntN(5) == 0 {
				v.Placement = Leader
			}
			for _, fe := range fes {
				if r.IntN(3) == 0 {
					v.Frontends = append(v.Frontends, fe)
				}
			}
			for range r.IntN(3) {
				v.Prefer = append(v.Prefer, fmt.Sprintf("n%d", r.IntN(n+2)))
			}
		}
		in.VIPs = append(in.VIPs, v)
		switch k := r.IntN(n + 2); {
		case k < n:
			in.Current[v.Address] = fmt.Sprintf("n%d", k)
		case k == n:
			in.Current[v.Address] = "gone"
		}
	}
	in.Rebalance = Manual
	if r.IntN(2) == 0 {
		in.Rebalance = Auto
	}
	return in
}

// checkStep checks one Place against the rules: every holder may hold its
// VIP, a VIP is unassigned only when no member may hold it, and a VIP
// changes node only with a reason that is true.
func checkStep(t *testing.T, in Input, res Result) {
	t.Helper()
	members := map[string]Member{}
	for _, m := range in.Members {
		members[m.Name] = m
	}
	moved := map[string]Move{}
	for _, mv := range res.Moves {
		moved[mv.VIP] = mv
	}
	rebalances := 0
	for _, v := range in.VIPs {
		got, ok := res.Assignment[v.Address]
		if v.Placement != Spread {
			if ok {
				t.Fatalf("leader VIP %s assigned to %q", v.Address, got)
			}
			continue
		}
		if got != "" && !mayHold(members[got], v) {
			t.Fatalf("%s assigned to %s, which may not hold it: %+v", v.Address, got, members[got])
		}
		if got == "" && slices.ContainsFunc(in.Members, func(m Member) bool { return mayHold(m, v) }) {
			t.Fatalf("%s unassigned though a member may hold it", v.Address)
		}
		cur := in.Current[v.Address]
		mv, isMove := moved[v.Address]
		if (got != cur) != isMove || isMove && (mv.From != cur || mv.To != got) {
			t.Fatalf("%s: %q -> %q, moves %+v", v.Address, cur, got, res.Moves)
		}
		if !isMove {
			continue
		}
		m, member := members[cur]
		switch mv.Reason {
		case ReasonNew:
			if cur != "" {
				t.Fatalf("%s moved as new from %q", v.Address, cur)
			}
		case ReasonGone:
			if member {
				t.Fatalf("%s moved as gone from member %s", v.Address, cur)
			}
		case ReasonUnfit:
			if !member || mayHold(m, v) {
				t.Fatalf("%s moved as unfit from %s, which may hold it", v.Address, cur)
			}
		case ReasonRebalance:
			rebalances++
			if in.Rebalance != Auto || in.Moving || slices.Contains(v.Prefer, cur) {
				t.Fatalf("rebalance move %+v not allowed (mode %s, moving %v, prefer %v)", mv, in.Rebalance, in.Moving, v.Prefer)
			}
		default:
			t.Fatalf("move %+v: unknown reason", mv)
		}
	}
	if rebalances > 1 || rebalances == 1 && len(res.Moves) > 1 {
		t.Fatalf("rebalance with other moves at once: %+v", res.Moves)
	}
}

// mayHold is the test's own statement of who may hold v, so that a broken
// eligibility rule in the package cannot vouch for itself.
func mayHold(m Member, v VIP) bool {
	if m.Name == "" || m.Witness || m.Maintenance || !m.Fit {
		return false
	}
	for _, fe := range v.Frontends {
		if !slices.Contains(m.Healthy, fe) {
			return false
		}
	}
	return true
}

func loads(in Input, assign map[string]string) map[string]int {
	out := map[string]int{}
	for _, m := range in.Members {
		if !m.Witness && !m.Maintenance && m.Fit {
			out[m.Name] = 0
		}
	}
	for _, n := range assign {
		if n != "" {
			out[n]++
		}
	}
	return out
}

// Random clusters, placed again and again as the leader would (each result
// the next current assignment): no step breaks a rule, auto settles within
// a bounded number of steps, and then no node holds more than one VIP above
// a node that may take one of its movable VIPs; with every node fit and no
// preferences, the counts differ by at most one. Manual never rebalances,
// and a second placement of a settled result moves nothing.
func TestPlacementProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 1))
	for i := range 3000 {
		in := randomInput(r, i%3 == 0)
		var res Result
		for steps := 0; ; steps++ {
			res = Place(in)
			checkStep(t, in, res)
			if len(res.Moves) == 0 {
				break
			}
			if steps > 2*len(in.VIPs)*len(in.VIPs)+2 {
				t.Fatalf("case %d: no fixed point after %d steps: %+v", i, steps, in)
			}
			in.Current = res.Assignment
		}
		in.Current = res.Assignment
		load := loads(in, in.Current)
		if in.Rebalance != Auto {
			continue
		}
		members := map[string]Member{}
		for _, m := range in.Members {
			members[m.Name] = m
		}
		for _, v := range in.VIPs {
			from := in.Current[v.Address]
			if v.Placement != Spread || from == "" || slices.Contains(v.Prefer, from) {
				continue
			}
			for _, m := range in.Members {
				if mayHold(m, v) && load[from]-load[m.Name] > 1 {
					t.Fatalf("case %d settled with %s on %s (%d VIPs) though %s (%d) may take it", i, v.Address, from, load[from], m.Name, load[m.Name])
				}
			}
		}
		if i%3 == 0 {
			lo, hi := len(in.VIPs), 0
			for _, n := range load {
				lo, hi = min(lo, n), max(hi, n)
			}
			if hi-lo > 1 {
				t.Fatalf("case %d: all fit, settled loads %v differ by more than one", i, load)
			}
		}
	}
}
