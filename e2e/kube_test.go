package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/e2e/bed"
)

// TestKubernetesControlPlaneInTheBed starts the bed's control plane (etcd
// and kube-apiserver from `make kube-tools`) and creates a Service of type
// LoadBalancer in it. The API server gives it a ClusterIP from the bed's
// range and, with no load balancer controller, leaves its
// status.loadBalancer empty: kubectl's EXTERNAL-IP <pending>, what a bare
// metal cluster shows until something allocates the address (issue 14's
// Kubernetes mode is that something, and this bed is where it is tested).
func TestKubernetesControlPlaneInTheBed(t *testing.T) {
	b, cp := bed.StartKubeBed(t, filepath.Join(repoRoot(t), "bin", "kube"), "", bed.HostSpec{Name: "c", Addr: bed.ClientAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	svc := `{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
		"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}}`
	code, body, err := cp.Do(ctx, http.MethodPost, "/api/v1/namespaces/default/services", []byte(svc))
	if err != nil || code != http.StatusCreated {
		t.Fatalf("create the Service: status %d, %v: %.500s", code, err, body)
	}
	var got struct {
		Spec struct {
			Type      string `json:"type"`
			ClusterIP string `json:"clusterIP"`
			Ports     []struct {
				NodePort int `json:"nodePort"`
			} `json:"ports"`
		} `json:"spec"`
		Status struct {
			LoadBalancer struct {
				Ingress []json.RawMessage `json:"ingress"`
			} `json:"loadBalancer"`
		} `json:"status"`
	}
	// Read it back: what a controller's informer would see.
	code, body, err = cp.Do(ctx, http.MethodGet, "/api/v1/namespaces/default/services/web", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("read the Service back: status %d, %v: %.500s", code, err, body)
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decode the Service: %v: %.500s", err, body)
	}
	ip, err := netip.ParseAddr(got.Spec.ClusterIP)
	if err != nil || !netip.MustParsePrefix(bed.ServiceClusterRange).Contains(ip) {
		t.Errorf("ClusterIP %q, want one in %s", got.Spec.ClusterIP, bed.ServiceClusterRange)
	}
	if got.Spec.Type != "LoadBalancer" || len(got.Spec.Ports) != 1 || got.Spec.Ports[0].NodePort == 0 {
		t.Errorf("Service spec %+v, want a LoadBalancer with a node port allocated", got.Spec)
	}
	if n := len(got.Status.LoadBalancer.Ingress); n != 0 {
		t.Errorf("status.loadBalancer has %d ingress entries with no controller running, want none (pending)", n)
	}
	// kubectl from another host of the bed, as a user sees it.
	out, err := cp.Kubectl(ctx, b.Host("c"), "get", "service", "web", "--no-headers",
		"-o", "custom-columns=TYPE:.spec.type,EXTERNAL-IP:.status.loadBalancer.ingress[*].ip")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(out); len(f) != 2 || f[0] != "LoadBalancer" || f[1] != "<none>" {
		t.Errorf("kubectl get service web: %q, want LoadBalancer with no external IP", out)
	}
	out, err = cp.Kubectl(ctx, b.Host("c"), "get", "service", "web")
	if err != nil || !strings.Contains(out, "<pending>") {
		t.Errorf("kubectl get service web: %q (%v), want EXTERNAL-IP <pending>", out, err)
	}
	// Bad input is refused by name, as vipd's controller will see it.
	code, body, err = cp.Do(ctx, http.MethodPost, "/api/v1/namespaces/default/services", []byte(`{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "Bad_Name"}}`))
	if err != nil || code != http.StatusUnprocessableEntity {
		t.Errorf("an invalid Service: status %d, %v, want 422: %.300s", code, err, body)
	}
}
