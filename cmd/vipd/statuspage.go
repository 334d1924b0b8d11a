package main

import (
	_ "embed"
	"net/http"
)

// statusPageHTML is the page GET / serves: one self-contained file that
// polls GET /status and renders it, with no external scripts, fonts or
// styles.
//
//go:embed statuspage.html
var statusPageHTML []byte

// statusPageCSP lets the page run its own inline script and style and
// fetch from its own origin, and nothing else: a page that tried to load a
// script or font from elsewhere would be refused by the browser.
const statusPageCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func serveStatusPage(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", statusPageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.Write(statusPageHTML)
}
