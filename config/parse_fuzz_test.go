package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// FuzzParse feeds arbitrary documents to the config loader. It must never
// panic; every error must say where the problem is (a key path or a line);
// and an accepted config, written back with every key explicit, must parse
// again to the same config, so what Parse returns always re-validates.
func FuzzParse(f *testing.F) {
	f.Add([]byte(validDoc))
	f.Add(defaultYAML)
	examples, err := filepath.Glob("../deploy/examples/*.yaml")
	if err != nil || len(examples) == 0 {
		f.Fatalf("example configs for the seed corpus: %v (found %d)", err, len(examples))
	}
	for _, path := range examples {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("cluster:\n  secret_file: testdata/cluster.key\n  timing: {heartbeat: 200ms, election: 300ms, lease: 100ms}\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, err := Parse(doc)
		if err != nil {
			checkErrorsLocated(t, err)
			return
		}
		again := encodeConfig(t, cfg)
		cfg2, err := Parse(again)
		if err != nil {
			t.Fatalf("accepted config does not re-validate: %v\nwritten back as:\n%s", err, again)
		}
		if !reflect.DeepEqual(cfg, cfg2) {
			t.Fatalf("config changed on a round trip:\nfirst  %+v\nsecond %+v\nwritten back as:\n%s", cfg, cfg2, again)
		}
	})
}

// checkErrorsLocated fails unless every problem in err names where it is.
func checkErrorsLocated(t *testing.T, err error) {
	t.Helper()
	var problems []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		problems = joined.Unwrap()
	} else {
		problems = []error{err}
	}
	for _, p := range problems {
		var fe *FieldError
		if errors.As(p, &fe) {
			if fe.Path == "" && fe.Line == 0 {
				t.Errorf("error names neither a key path nor a line: %q", p)
			}
			continue
		}
		if !strings.Contains(p.Error(), "line ") {
			t.Errorf("error names no line: %q", p)
		}
	}
}

// encodeConfig writes cfg as YAML with every key explicit: the inverse of
// Parse for an accepted config. It walks the struct by its yaml tags, so a
// key added to the schema is covered without changing this test.
func encodeConfig(t *testing.T, cfg *Config) []byte {
	t.Helper()
	out, err := yaml.Marshal(encodeValue(t, reflect.ValueOf(cfg).Elem(), ""))
	if err != nil {
		t.Fatalf("write config back: %v", err)
	}
	return out
}

func encodeValue(t *testing.T, v reflect.Value, path string) *yaml.Node {
	t.Helper()
	switch x := v.Interface().(type) {
	case time.Duration:
		return scalarNode("!!str", x.String())
	case StatusRange:
		return scalarNode("!!str", x.String())
	case Timing:
		if x.Profile != "" {
			return scalarNode("!!str", x.Profile)
		}
	}
	switch v.Kind() {
	case reflect.String:
		return scalarNode("!!str", v.String())
	case reflect.Int:
		return scalarNode("!!int", strconv.FormatInt(v.Int(), 10))
	case reflect.Bool:
		return scalarNode("!!bool", strconv.FormatBool(v.Bool()))
	case reflect.Slice:
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for i := 0; i < v.Len(); i++ {
			seq.Content = append(seq.Content, encodeValue(t, v.Index(i), path+"[]"))
		}
		return seq
	case reflect.Struct:
		m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for i := 0; i < v.NumField(); i++ {
			name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
			field := v.Field(i)
			switch {
			case name == "" || name == "-":
				continue
			case field.Kind() == reflect.Slice && field.IsNil():
				continue // nil and absent parse alike; [] is kept as []
			case field.Kind() == reflect.String && field.String() == "":
				continue // as a person writes it: a key whose presence means something must not appear
			case field.Kind() == reflect.Struct && field.IsZero() && strings.Contains(v.Type().Field(i).Tag.Get("yaml"), "omitempty"):
				continue // an optional section that is off (accept_proxy) is left out, as a person leaves it out
			}
			m.Content = append(m.Content, scalarNode("!!str", name), encodeValue(t, field, joinPath(path, name)))
		}
		return m
	}
	t.Fatalf("encodeConfig: no case for %s (%s) at %s", v.Type(), v.Kind(), path)
	return nil
}

func scalarNode(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}
