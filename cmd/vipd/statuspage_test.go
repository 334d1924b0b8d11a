package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/vip"
)

func TestStatusPageIsOneSelfContainedHTMLFile(t *testing.T) {
	n := startNode(t, fastHealth)
	resp, err := http.Get("http://" + n.admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: HTTP %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q does not refuse other origins", csp)
	}
	page := string(body)
	for _, ref := range []string{"http://", "https://", "//cdn", "<link", "src="} {
		if strings.Contains(page, ref) {
			t.Errorf("the page refers to something outside itself: %q", ref)
		}
	}
	if resp, err := http.Get("http://" + n.admin + "/nonexistent"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nonexistent: HTTP %d, want 404 (the page is served at / only)", resp.StatusCode)
	}
}

// chromiumFlags are what headless Chromium needs on a machine without an
// outside network: no background fetches, updates, sync or QUIC, which
// would otherwise try connections that are refused.
func chromiumFlags(path, profile string) []chromedp.ExecAllocatorOption {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1400, 900),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to sandbox as root
	}
	return opts
}

// findChromium returns Debian's chromium. Without it the test skips, except
// under CI=true, where a missing browser is a failure (the test installer
// installs it).
func findChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium not found (%v): CI must run the browser test; install Debian's chromium", err)
		}
		t.Skipf("chromium not found (%v): skipping the browser test (apt-get install chromium)", err)
	}
	return path
}

// pageBackend is a backend row as the status page's DOM shows it.
type pageBackend struct {
	Address string `json:"address"`
	State   string `json:"state"` // up | down | drained
	Text    string `json:"text"`
}

// pageView is what the page shows, read in one evaluation: the rows and
// how many refreshes rendered them.
type pageView struct {
	Refreshed int           `json:"refreshed"`
	Rows      []pageBackend `json:"rows"`
}

func (v pageView) backend(addr string) pageBackend {
	for _, r := range v.Rows {
		if r.Address == addr {
			return r
		}
	}
	return pageBackend{}
}

const readPage = `({
	refreshed: Number(document.body.dataset.refreshed || 0),
	rows: Array.from(document.querySelectorAll("tr[data-backend]")).map((tr) =>
		({address: tr.dataset.backend, state: tr.dataset.state, text: tr.innerText})),
})`

// The status page in a real browser: it shows both backends up, and the one
// that went down as down within two refreshes of /status saying so, while
// the other stays up. It loads nothing from anywhere but the daemon.
func TestStatusPageInABrowserShowsABackendGoingDown(t *testing.T) {
	chromium := findChromium(t)
	// Checks with time to answer: a loaded machine must not make the live
	// backend flap, nor fill the dead one's transitions with timeouts.
	n := startNode(t, "{type: tcp, interval: 300ms, timeout: 300ms, rise: 1, fall: 1, initial: healthy}")

	ctx, clean := browse(t, chromium, "http://"+n.admin)
	defer clean()

	dead, alive := n.backends[0], n.backends[1]
	view := func() pageView {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[pageView](readPage))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return v
	}
	waitFor(t, "the page shows both backends up", func() bool {
		v := view()
		return v.backend(dead).State == "up" && v.backend(alive).State == "up"
	})

	n.killBackend[0]()
	waitFor(t, "/status says the backend is down", func() bool {
		var st Status
		n.getJSON(t, "/status", &st)
		return !st.Pools[0].Backends[0].Healthy
	})
	// A refresh may be in flight with the older answer; the next one has it.
	by := view().Refreshed + 2
	var shown pageView
	waitFor(t, "the page shows the dead backend down", func() bool {
		shown = view()
		return shown.backend(dead).State == "down"
	})
	if shown.Refreshed > by {
		t.Errorf("the page showed the backend down at refresh %d, want by %d", shown.Refreshed, by)
	}
	if b := shown.backend(alive); b.State != "up" {
		t.Errorf("the live backend shows %q: %+v", b.State, b)
	}
	if b := shown.backend(dead); !strings.Contains(b.Text, "down (refused)") {
		t.Errorf("the dead backend's row lacks its transition: %q", b.Text)
	}
	if path := os.Getenv("VIPD_STATUS_PAGE_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			err = os.WriteFile(path, png, 0o644)
		}
		if err != nil {
			t.Errorf("screenshot: %v", err)
		}
	}
}

// browse opens origin's status page in headless Chromium. The function it
// returns fails the test if the page loaded anything from elsewhere or the
// browser logged an error (a CSP refusal, a failed load), then closes it.
func browse(t *testing.T, chromium, origin string) (context.Context, func()) {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromiumFlags(chromium, t.TempDir())...)
	ctx, cancel := chromedp.NewContext(alloc)
	var (
		mu       sync.Mutex
		foreign  []string // requests to anywhere but origin
		problems []string // errors the browser logged
	)
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			if u, err := url.Parse(ev.Request.URL); err != nil || u.Scheme+"://"+u.Host != origin {
				foreign = append(foreign, ev.Request.URL)
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				problems = append(problems, fmt.Sprintf("%s: %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/")); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("load the page: %v", err)
	}
	return ctx, func() {
		defer cancelAlloc()
		defer cancel()
		mu.Lock()
		defer mu.Unlock()
		if len(foreign) > 0 {
			t.Errorf("the page loaded from elsewhere: %q", foreign)
		}
		if len(problems) > 0 {
			t.Errorf("the browser logged errors: %q", problems)
		}
	}
}

// pageVIP is a VIP row as the status page's DOM shows it.
type pageVIP struct {
	Address   string `json:"address"`
	Placement string `json:"placement"`
	Holder    string `json:"holder"`
	Text      string `json:"text"`
}

// The status page shows each VIP's placement and holder as /status gives
// them: a leader VIP on the leader, a spread VIP held here, one held by
// another node. The page is served by the daemon's handler; /status is a
// fixed answer, so that three placements are on one page without a
// cluster (the e2e spread tests check /status itself).
func TestStatusPageInABrowserShowsEachVIPsPlacementAndHolder(t *testing.T) {
	chromium := findChromium(t)
	st := Status{Node: "n2", State: "Follower", Leader: "n1", Pools: []PoolStatus{}, VIPs: []VIPStatus{
		{Status: vip.Status{Address: "198.18.0.100", Interface: "eth0"}, Placement: config.PlacementLeader, Holder: "n1"},
		{Status: vip.Status{Address: "198.18.0.101", Interface: "eth0", Held: true}, Placement: config.PlacementSpread, Holder: "n2"},
		{Status: vip.Status{Address: "198.18.0.102", Interface: "eth0"}, Placement: config.PlacementSpread, Holder: "n3"},
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", serveStatusPage)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, st) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx, clean := browse(t, chromium, srv.URL)
	defer clean()

	want := map[string]pageVIP{
		"198.18.0.100": {Placement: "leader", Holder: "n1"},
		"198.18.0.101": {Placement: "spread", Holder: "n2"},
		"198.18.0.102": {Placement: "spread", Holder: "n3"},
	}
	var rows []pageVIP
	waitFor(t, "the page shows every VIP with its placement and holder", func() bool {
		var err error
		rows, err = chromedp.Run(ctx, chromedp.Evaluate[[]pageVIP](`Array.from(document.querySelectorAll("tr[data-vip]")).map((tr) =>
			({address: tr.dataset.vip, placement: tr.dataset.placement, holder: tr.dataset.holder, text: tr.innerText}))`))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		if len(rows) != len(want) {
			return false
		}
		for _, r := range rows {
			w, text := want[r.Address], strings.ToLower(r.Text) // badges are upper case by CSS
			if r.Placement != w.Placement || r.Holder != w.Holder ||
				!strings.Contains(text, w.Placement) || !strings.Contains(text, w.Holder) {
				return false
			}
		}
		return true
	})
	if r := rows[1]; !strings.Contains(strings.ToLower(r.Text), "this node") {
		t.Errorf("the VIP held here reads %q, want it marked as this node's", r.Text)
	}
}
