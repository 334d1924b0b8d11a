package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
)

// restartOnly are the keys (and sections) a running node cannot take live:
// its identity and its place in the cluster (node.name, cluster.*), the
// admin listener and how it authenticates (admin.*), the log encoder
// (log.format) and the Kubernetes mode (kubernetes.*: its client and
// informers are built once). A reload that changes one of them is refused whole.
var restartOnly = []string{"node.name", "cluster", "admin", "log.format", "kubernetes"}

// RestartOnlyChanges lists the key paths that differ between running and
// next and that only a restart can apply, in file order. Keys read from
// files (cluster.secret_file's keys, cluster.tls's certificates) are named
// by their section with "(file contents)".
func RestartOnlyChanges(running, next *Config) []string {
	var out []string
	diffPaths("", reflect.ValueOf(*running), reflect.ValueOf(*next), func(path string) {
		for _, key := range restartOnly {
			if path == key || strings.HasPrefix(path, key+".") || strings.HasPrefix(path, key+" ") {
				out = append(out, path)
				return
			}
		}
	})
	return out
}

var configPkg = reflect.TypeFor[Config]().PkgPath()

// diffPaths calls changed with the path of every leaf that differs: a
// field of a config struct is walked into, anything else (slices, and
// values of other packages such as durations) is one leaf.
func diffPaths(path string, a, b reflect.Value, changed func(string)) {
	if a.Kind() != reflect.Struct || a.Type().PkgPath() != configPkg {
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			changed(path)
		}
		return
	}
	for i := range a.NumField() {
		f := a.Type().Field(i)
		var sub string
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case tag == "-":
			sub = path + " (file contents)"
		case path == "":
			sub = tag
		default:
			sub = path + "." + tag
		}
		diffPaths(sub, a.Field(i), b.Field(i), changed)
	}
}

// Digest names what a node serves: its VIPs, frontends and pools. Every
// node of a cluster should run the same, so nodes whose digests differ run
// different configs. The node-local sections (node, cluster binds, admin,
// log) differ between nodes by design and are left out, and so are secrets.
func Digest(c *Config) string {
	served := struct {
		VIPs      []VIP
		Frontends []Frontend
		Pools     []Pool
	}{c.VIPs, c.Frontends, c.Pools}
	b, err := json.Marshal(served)
	if err != nil { // plain data: cannot happen
		panic("config digest: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
