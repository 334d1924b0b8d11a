//go:build tools

// Package tools pins kube-apiserver and kubectl for vipd's Kubernetes test
// bed.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
