package bed

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// KubePool is the address pool of vipd's Kubernetes mode in the bed
// (KubeConfig), named KubePoolName: four addresses of the bridge subnet
// that no other test address uses, lowest first.
var KubePool = []netip.Addr{
	netip.MustParseAddr("198.18.0.200"), netip.MustParseAddr("198.18.0.201"),
	netip.MustParseAddr("198.18.0.202"), netip.MustParseAddr("198.18.0.203"),
}

const (
	KubePoolName  = "default"
	KubeNamespace = "default" // where the bed's Services and EndpointSlices live
)

// KubeConfig returns a VipdOptions.Render that writes node's config
// (VipdConfig: its leader VIP stays) with a kubernetes section: the
// control plane's kubeconfig, the node's bed interface, and one pool of
// KubePool.
func KubeConfig(kubeconfig string) func(VipdOptions, *Host) ([]byte, error) {
	return func(o VipdOptions, node *Host) ([]byte, error) {
		cfg, err := VipdConfig(o, node)
		if err != nil {
			return nil, err
		}
		section := fmt.Sprintf("kubernetes:\n  kubeconfig: %q\n  interface: %s\n  address_pools:\n    - name: %s\n      addresses: ['%s-%s']\n",
			kubeconfig, HostIface, KubePoolName, KubePool[0], KubePool[len(KubePool)-1])
		return append(cfg, section...), nil
	}
}

// Service is what the tests set of a Service of type LoadBalancer.
type Service struct {
	Name        string
	Ports       []ServicePort
	Annotations map[string]string
	Local       bool // externalTrafficPolicy: Local
}

// ServicePort is one TCP port of a Service.
type ServicePort struct {
	Name       string
	Port       int
	TargetPort int // 0: BackendPort
}

// Endpoint is one endpoint of an EndpointSlice: a backend of the bed.
type Endpoint struct {
	Addr     netip.Addr
	NodeName string // "": none
	NotReady bool   // conditions.ready false
}

// Slice is a selector-less Service's EndpointSlice (discovery.k8s.io/v1),
// labelled with kubernetes.io/service-name, with one TCP port named
// PortName on BackendPort.
type Slice struct {
	Name, Service, PortName string
	Endpoints               []Endpoint
}

// Backends returns one ready Endpoint per host, on no node.
func Backends(hosts ...*Host) []Endpoint {
	out := make([]Endpoint, len(hosts))
	for i, h := range hosts {
		out[i] = Endpoint{Addr: h.Addr}
	}
	return out
}

// OnNode returns eps with every NodeName set to node.
func OnNode(node string, eps []Endpoint) []Endpoint {
	out := make([]Endpoint, len(eps))
	for i, e := range eps {
		e.NodeName = node
		out[i] = e
	}
	return out
}

// Ingress is one entry of a Service's status.loadBalancer.ingress.
type Ingress struct {
	IP     string `json:"ip,omitempty"`
	IPMode string `json:"ipMode,omitempty"`
}

// Event is the part of a core/v1 Event the tests read.
type Event struct {
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (e Event) String() string { return e.Type + " " + e.Reason + ": " + e.Message }

// CreateService creates s in KubeNamespace.
func (cp *ControlPlane) CreateService(ctx context.Context, s Service) error {
	type port struct {
		Name       string `json:"name,omitempty"`
		Protocol   string `json:"protocol"`
		Port       int    `json:"port"`
		TargetPort int    `json:"targetPort"`
	}
	spec := map[string]any{"type": "LoadBalancer"}
	var ports []port
	for _, p := range s.Ports {
		tp := p.TargetPort
		if tp == 0 {
			tp = BackendPort
		}
		ports = append(ports, port{Name: p.Name, Protocol: "TCP", Port: p.Port, TargetPort: tp})
	}
	spec["ports"] = ports
	if s.Local {
		spec["externalTrafficPolicy"] = "Local"
	}
	meta := map[string]any{"name": s.Name}
	if len(s.Annotations) > 0 {
		meta["annotations"] = s.Annotations
	}
	body, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
	if err != nil {
		return err
	}
	return cp.expect(ctx, http.MethodPost, "/api/v1/namespaces/"+KubeNamespace+"/services", body, http.StatusCreated)
}

// DeleteService deletes the Service name; one that is already gone is no
// error.
func (cp *ControlPlane) DeleteService(ctx context.Context, name string) error {
	return cp.expect(ctx, http.MethodDelete, "/api/v1/namespaces/"+KubeNamespace+"/services/"+name, nil, http.StatusOK, http.StatusNotFound)
}

// ServiceIngress returns the Service's status.loadBalancer.ingress.
func (cp *ControlPlane) ServiceIngress(ctx context.Context, name string) ([]Ingress, error) {
	path := "/api/v1/namespaces/" + KubeNamespace + "/services/" + name
	code, body, err := cp.Do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %.300s", path, code, body)
	}
	var svc struct {
		Status struct {
			LoadBalancer struct {
				Ingress []Ingress `json:"ingress"`
			} `json:"loadBalancer"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &svc); err != nil {
		return nil, fmt.Errorf("GET %s: %w: %.300s", path, err, body)
	}
	return svc.Status.LoadBalancer.Ingress, nil
}

// ServiceEvents returns the Events whose involved object is named name
// (core/v1, which also lists those written through events.k8s.io/v1).
func (cp *ControlPlane) ServiceEvents(ctx context.Context, name string) ([]Event, error) {
	path := "/api/v1/namespaces/" + KubeNamespace + "/events?fieldSelector=" + url.QueryEscape("involvedObject.name="+name)
	code, body, err := cp.Do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d: %.300s", path, code, body)
	}
	var list struct {
		Items []Event `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		return nil, fmt.Errorf("GET %s: %w: %.300s", path, err, body)
	}
	return list.Items, nil
}

// ApplySlice creates the EndpointSlice s, or replaces the one of that name.
func (cp *ControlPlane) ApplySlice(ctx context.Context, s Slice) error {
	type cond struct {
		Ready bool `json:"ready"`
	}
	type endpoint struct {
		Addresses  []string `json:"addresses"`
		Conditions cond     `json:"conditions"`
		NodeName   string   `json:"nodeName,omitempty"`
	}
	eps := []endpoint{} // an empty list, not null: a slice with no endpoint
	for _, e := range s.Endpoints {
		eps = append(eps, endpoint{Addresses: []string{e.Addr.String()}, Conditions: cond{Ready: !e.NotReady}, NodeName: e.NodeName})
	}
	meta := map[string]any{"name": s.Name, "labels": map[string]string{
		"kubernetes.io/service-name":             s.Service,
		"endpointslice.kubernetes.io/managed-by": "e2e.vipd.io",
	}}
	obj := map[string]any{
		"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta,
		"addressType": "IPv4", "endpoints": eps,
		"ports": []map[string]any{{"name": s.PortName, "protocol": "TCP", "port": BackendPort}},
	}
	coll := "/apis/discovery.k8s.io/v1/namespaces/" + KubeNamespace + "/endpointslices"
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	code, answer, err := cp.Do(ctx, http.MethodPost, coll, body)
	if err != nil {
		return err
	}
	switch code {
	case http.StatusCreated:
		return nil
	case http.StatusConflict: // it exists: replace it at its current version
	default:
		return fmt.Errorf("POST %s: status %d: %.300s", coll, code, answer)
	}
	code, answer, err = cp.Do(ctx, http.MethodGet, coll+"/"+s.Name, nil)
	if err != nil {
		return err
	}
	var cur struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(answer), &cur) != nil {
		return fmt.Errorf("GET %s/%s: status %d: %.300s", coll, s.Name, code, answer)
	}
	meta["resourceVersion"] = cur.Metadata.ResourceVersion
	if body, err = json.Marshal(obj); err != nil {
		return err
	}
	return cp.expect(ctx, http.MethodPut, coll+"/"+s.Name, body, http.StatusOK)
}

// DeleteSlice deletes the EndpointSlice name; one already gone is no error.
func (cp *ControlPlane) DeleteSlice(ctx context.Context, name string) error {
	return cp.expect(ctx, http.MethodDelete, "/apis/discovery.k8s.io/v1/namespaces/"+KubeNamespace+"/endpointslices/"+name, nil, http.StatusOK, http.StatusNotFound)
}

// expect sends one request and wants one of codes back.
func (cp *ControlPlane) expect(ctx context.Context, method, path string, body []byte, codes ...int) error {
	code, answer, err := cp.Do(ctx, method, path, body)
	if err != nil {
		return err
	}
	for _, c := range codes {
		if code == c {
			return nil
		}
	}
	return fmt.Errorf("%s %s: status %d: %.300s", method, path, code, strings.TrimSpace(answer))
}
