package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FieldError is one problem in a config file: where it is (key path and
// line), the offending value, and what is wrong with it.
type FieldError struct {
	Path  string // e.g. pools[0].backends[1].address
	Line  int    // 0 when the key is absent from the file (a missing required key)
	Value string // the value as written; empty for a missing key
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Path)
	if e.Value != "" {
		fmt.Fprintf(&b, ": %q", e.Value)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// nodeDecoder is implemented by config types whose YAML form is not a plain
// mapping of fields (a timing that is either a profile name or a mapping, a
// status range that is either a number or "200-299").
type nodeDecoder interface {
	decodeNode(d *decoder, n *yaml.Node, path string)
}

var (
	durationType    = reflect.TypeOf(time.Duration(0))
	nodeDecoderType = reflect.TypeOf((*nodeDecoder)(nil)).Elem()
)

// decoder walks a yaml.Node tree into a Go value, field by field, so that
// every error can name the key path and the line. It records the line of
// every key it sees so that later validation can point at them too.
type decoder struct {
	errs  []error
	lines map[string]int
	set   map[string]bool // key paths present in the file
}

func newDecoder() *decoder {
	return &decoder{lines: map[string]int{}, set: map[string]bool{}}
}

func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	e := &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line = n.Line
		if n.Kind == yaml.ScalarNode {
			e.Value = n.Value
		}
	}
	d.errs = append(d.errs, e)
}

// decode fills v (a pointer's element) from n.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.lines[path] = n.Line
	d.set[path] = true
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.CanAddr() && v.Addr().Type().Implements(nodeDecoderType) {
		v.Addr().Interface().(nodeDecoder).decodeNode(d, n, path)
		return
	}
	switch {
	case v.Type() == durationType:
		if !d.expectScalar(n, path) {
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.fail(path, n, "not a duration (use Go syntax such as 250ms, 2s, 1h)")
			return
		}
		if dur < 0 {
			d.fail(path, n, "must not be negative")
			return
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.String:
		if d.expectScalar(n, path) {
			v.SetString(n.Value)
		}
	case v.Kind() == reflect.Int:
		if !d.expectScalar(n, path) {
			return
		}
		i, err := strconv.Atoi(n.Value)
		if err != nil {
			d.fail(path, n, "not a whole number")
			return
		}
		v.SetInt(int64(i))
	case v.Kind() == reflect.Bool:
		if !d.expectScalar(n, path) {
			return
		}
		b, err := strconv.ParseBool(n.Value)
		if err != nil {
			d.fail(path, n, "not true or false")
			return
		}
		v.SetBool(b)
	case v.Kind() == reflect.Slice:
		d.decodeSlice(n, v, path)
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	default:
		panic(fmt.Sprintf("config: no decoder for %s at %s", v.Type(), path))
	}
}

func (d *decoder) expectScalar(n *yaml.Node, path string) bool {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n, "expected a single value, found %s", kindName(n))
		return false
	}
	return true
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n, "expected a list, found %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "expected a mapping of keys, found %s", kindName(n))
		return
	}
	fields := map[string]int{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			fields[name] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		keyPath := joinPath(path, key.Value)
		idx, ok := fields[key.Value]
		if !ok {
			d.fail(keyPath, key, "unknown key (known: %s)", knownKeys(fields))
			continue
		}
		if seen[key.Value] {
			d.fail(keyPath, key, "key appears twice")
			continue
		}
		seen[key.Value] = true
		if val.Kind == yaml.ScalarNode && val.Tag == "!!null" {
			continue // "key:" with no value keeps the default
		}
		d.decode(val, v.Field(idx), keyPath)
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func knownKeys(fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a single value"
	}
}
