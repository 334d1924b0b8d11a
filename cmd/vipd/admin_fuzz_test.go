package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"testing"

	"github.com/vipd/vipd/election"
)

// bodyCalls are the admin calls that read a JSON body. /v1/transfer and
// /v1/leave read none: whatever they are sent, they do the same.
var bodyCalls = []string{"/v1/drain", "/v1/undrain", "/v1/remove", "/v1/maintenance"}

// FuzzAdminCalls posts arbitrary bodies to every admin call that reads one,
// on a running single-node daemon. No body makes the daemon fail (5xx) or
// panic; a refused call (4xx) gives its reason and changes neither the
// replicated intent nor the membership; an accepted one answers ok.
func FuzzAdminCalls(f *testing.F) {
	n := startNode(f, fastHealth)
	admin := n.d.adminHandler()
	call := func(path string) uint8 { return uint8(slices.Index(bodyCalls, path)) }
	for _, seed := range []struct{ path, body string }{
		{"/v1/drain", fmt.Sprintf(`{"pool":"web","backend":%q}`, n.backends[0])},
		{"/v1/undrain", fmt.Sprintf(`{"pool":"web","backend":%q}`, n.backends[0])},
		{"/v1/drain", `{"pool":"web","backend":"198.18.0.99:1"}`},
		{"/v1/drain", `{"pool":"web","backend":"x","colour":1}`},
		{"/v1/drain", `[]`},
		{"/v1/undrain", `{"pool":"web",`},
		{"/v1/remove", `{"name":"solo"}`},
		{"/v1/remove", `{"name":"lb-9"}`},
		{"/v1/remove", `{}`},
		{"/v1/maintenance", `{"node":"lb-2","on":true}`},
		{"/v1/maintenance", `{"node":"lb-2","on":false}`},
		{"/v1/maintenance", `{"node":"solo"}`},
		{"/v1/maintenance", `{"node":"solo","on":"yes"}`},
	} {
		f.Add(call(seed.path), []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := bodyCalls[int(which)%len(bodyCalls)]
		intent, members := n.d.node.Intent(), memberNames(n.d.node.Status().Members)
		rec := httptest.NewRecorder()
		admin.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		var answer struct{ Error, Result string }
		decodeErr := json.Unmarshal(rec.Body.Bytes(), &answer)
		switch code := rec.Code; {
		case code >= 500:
			t.Fatalf("POST %s %q: HTTP %d %s", path, body, code, rec.Body)
		case code >= 400:
			if decodeErr != nil || answer.Error == "" {
				t.Fatalf("POST %s %q: HTTP %d without a reason: %s", path, body, code, rec.Body)
			}
			if now := n.d.node.Intent(); !reflect.DeepEqual(now, intent) {
				t.Fatalf("refused POST %s %q changed the intent: %+v -> %+v", path, body, intent, now)
			}
			if now := memberNames(n.d.node.Status().Members); !slices.Equal(now, members) {
				t.Fatalf("refused POST %s %q changed the members: %v -> %v", path, body, members, now)
			}
		case code != http.StatusOK || answer.Result != "ok":
			t.Fatalf("POST %s %q: HTTP %d %s; want 4xx or 200 ok", path, body, code, rec.Body)
		}
	})
}

// memberNames lists the voters and non-voters by name.
func memberNames(members []election.Member) []string {
	var names []string
	for _, m := range members {
		names = append(names, fmt.Sprintf("%s voter=%t", m.Name, m.Voter))
	}
	return names
}
