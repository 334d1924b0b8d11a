package config

import (
	_ "embed"
	"fmt"
)

//go:embed default.yaml
var defaultYAML []byte

// Default is the embedded single-node config: one frontend on
// 127.0.0.1:8080 in front of two backends on 127.0.0.1:9001 and :9002, no
// VIP, no peers. vipd runs it when started without --config.
func Default() *Config {
	cfg, err := Parse(defaultYAML)
	if err != nil {
		panic(fmt.Sprintf("config: the embedded default is invalid: %v", err)) // caught by TestDefaultIsValid
	}
	return cfg
}

// DefaultYAML returns the text of the embedded default, for `vipd --print-default`.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }
