//go:build tools

// Package tools pins etcd for vipd's Kubernetes test bed.
package tools

import _ "go.etcd.io/etcd/server/v3"
