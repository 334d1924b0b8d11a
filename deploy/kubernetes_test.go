package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/e2e/bed"
	"github.com/vipd/vipd/internal/testenv"
)

const daemonSetFile = "kubernetes/vipd-daemonset.yaml"

// serviceAccount is the identity the DaemonSet's pods run as, the subject
// of the ClusterRoleBinding.
const serviceAccount = "system:serviceaccount:kube-system:vipd"

// kubeObject is one document of a manifest: its kind and name, and the
// document itself for the kind's own type.
type kubeObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	doc yaml.Node
}

func loadManifest(t *testing.T, path string) []kubeObject {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []kubeObject
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o kubeObject
		err := dec.Decode(&o.doc)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := o.doc.Decode(&o); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		objs = append(objs, o)
	}
}

// manifestObject decodes the one object of kind and name into v.
func manifestObject(t *testing.T, objs []kubeObject, kind, name string, v any) {
	t.Helper()
	i := slices.IndexFunc(objs, func(o kubeObject) bool { return o.Kind == kind && o.Metadata.Name == name })
	if i < 0 {
		t.Fatalf("%s: no %s %q", daemonSetFile, kind, name)
	}
	if err := objs[i].doc.Decode(v); err != nil {
		t.Fatalf("%s: %s %s: %v", daemonSetFile, kind, name, err)
	}
}

// The parts of a DaemonSet's pod the daemon depends on.
type (
	daemonSet struct {
		Metadata struct {
			Namespace string `yaml:"namespace"`
		} `yaml:"metadata"`
		Spec struct {
			Template struct {
				Spec podSpec `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	podSpec struct {
		ServiceAccountName            string         `yaml:"serviceAccountName"`
		HostNetwork                   bool           `yaml:"hostNetwork"`
		TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
		InitContainers                []podContainer `yaml:"initContainers"`
		Containers                    []podContainer `yaml:"containers"`
		Volumes                       []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
			EmptyDir *struct{} `yaml:"emptyDir"`
			Secret   *struct {
				SecretName string `yaml:"secretName"`
			} `yaml:"secret"`
			HostPath *struct {
				Path string `yaml:"path"`
			} `yaml:"hostPath"`
		} `yaml:"volumes"`
	}
	podContainer struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Env     []struct {
			Name      string `yaml:"name"`
			ValueFrom struct {
				FieldRef struct {
					FieldPath string `yaml:"fieldPath"`
				} `yaml:"fieldRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		SecurityContext struct {
			Privileged               *bool `yaml:"privileged"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct {
				Add  []string `yaml:"add"`
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
			SeccompProfile struct {
				Type string `yaml:"type"`
			} `yaml:"seccompProfile"`
		} `yaml:"securityContext"`
		LivenessProbe  probe `yaml:"livenessProbe"`
		ReadinessProbe probe `yaml:"readinessProbe"`
		VolumeMounts   []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
	}
)

// volumeAt is the volume mounted at the directory that holds path, and
// where in it path is.
func (c podContainer) volumeAt(path string) (volume, rest string) {
	for _, m := range c.VolumeMounts {
		if r, ok := strings.CutPrefix(path, m.MountPath+"/"); ok {
			return m.Name, r
		}
	}
	return "", ""
}

func (c podContainer) mountOf(volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	return ""
}

// renderConfig runs the init container's own command, as the kubelet
// would, on the ConfigMap's template with env as its downward-API values.
// The container's mount paths are moved under a temporary root; it returns
// the main container's config file as rendered.
func renderConfig(t *testing.T, pod podSpec, template map[string]string, env map[string]string) (string, error) {
	t.Helper()
	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("want one init container and one container, have %d and %d", len(pod.InitContainers), len(pod.Containers))
	}
	init, vipd := pod.InitContainers[0], pod.Containers[0]
	testenv.NeedProgram(t, "sh", "the init container's script renders the config")
	if len(init.Command) != 3 || init.Command[0] != "/bin/sh" || init.Command[1] != "-c" {
		t.Fatalf("init container %s: command %q, want /bin/sh -c SCRIPT", init.Name, init.Command)
	}
	root := t.TempDir()
	script := init.Command[2]
	for _, m := range init.VolumeMounts {
		if !strings.Contains(script, m.MountPath+"/") {
			t.Fatalf("init container %s: its script does not use its mount %s", init.Name, m.MountPath)
		}
		script = regexp.MustCompile(regexp.QuoteMeta(m.MountPath)+"/").ReplaceAllLiteralString(script, root+m.MountPath+"/")
		if err := os.MkdirAll(root+m.MountPath, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The ConfigMap volume: one file per key.
	for _, v := range pod.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		dir := init.mountOf(v.Name)
		if dir == "" {
			continue
		}
		for key, text := range template {
			if err := os.WriteFile(filepath.Join(root+dir, key), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	cmd := exec.Command(init.Command[0], init.Command[1], script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range init.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+env[e.ValueFrom.FieldRef.FieldPath])
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("init container %s: %w: %s", init.Name, err, out)
	}

	cfgPath := argAfter(vipd.Command, "--config")
	vol, rest := vipd.volumeAt(cfgPath)
	if vol == "" || init.mountOf(vol) == "" {
		t.Fatalf("vipd reads %q, which is on no volume the init container writes", cfgPath)
	}
	data, err := os.ReadFile(filepath.Join(root+init.mountOf(vol), rest))
	if err != nil {
		t.Fatalf("the init container did not write vipd's config: %v", err)
	}
	return string(data), nil
}

func argAfter(argv []string, flag string) string {
	if i := slices.Index(argv, flag); i >= 0 && i+1 < len(argv) {
		return argv[i+1]
	}
	return ""
}

// sampleNode is the downward API of one node, as the kubelet fills it in.
var sampleNode = map[string]string{"spec.nodeName": "worker-2", "status.hostIP": "198.18.0.12"}

func loadDaemonSet(t *testing.T) (podSpec, map[string]string) {
	t.Helper()
	objs := loadManifest(t, daemonSetFile)
	var ds daemonSet
	manifestObject(t, objs, "DaemonSet", "vipd", &ds)
	if ds.Metadata.Namespace != "kube-system" {
		t.Errorf("DaemonSet in namespace %q, want kube-system", ds.Metadata.Namespace)
	}
	pod := ds.Spec.Template.Spec
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil {
			manifestObject(t, objs, "ConfigMap", v.ConfigMap.Name, &cm)
		}
	}
	if len(cm.Data) == 0 {
		t.Fatal("the pod mounts no ConfigMap with a config template")
	}
	return pod, cm.Data
}

// The ConfigMap's template, rendered by the init container's script with
// one node's name and IP, is a valid config of that node with a
// kubernetes section using the in-cluster service account.
func TestKubernetesDaemonSetConfigRendersForEachNode(t *testing.T) {
	pod, template := loadDaemonSet(t)
	rendered, err := renderConfig(t, pod, template, sampleNode)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(rendered))
	if err != nil {
		t.Fatalf("rendered config does not load: %v\n%s", err, rendered)
	}
	name, ip := sampleNode["spec.nodeName"], sampleNode["status.hostIP"]
	if cfg.Node.Name != name {
		t.Errorf("node.name %q, want the Kubernetes node name %q (externalTrafficPolicy: Local matches on it)", cfg.Node.Name, name)
	}
	for key, addr := range map[string]string{"cluster.raft_bind": cfg.Cluster.RaftBind, "cluster.gossip_bind": cfg.Cluster.GossipBind, "admin.listen": cfg.Admin.Listen} {
		if host, _, err := net.SplitHostPort(addr); err != nil || host != ip {
			t.Errorf("%s %q, want the node IP %s", key, addr, ip)
		}
	}
	k := cfg.Kubernetes
	if !k.Enabled() || k.Kubeconfig != "" || len(k.AddressPools) == 0 {
		t.Errorf("kubernetes section %+v: want it enabled, with pools and an empty kubeconfig (the pod's service account)", k)
	}
	t.Logf("node %s: raft %s, %d address pools on %s", cfg.Node.Name, cfg.Cluster.RaftBind, len(k.AddressPools), k.Interface)

	// The files the config names are where the pod mounts them.
	vipd := pod.Containers[0]
	volumes := map[string]int{}
	for i, v := range pod.Volumes {
		volumes[v.Name] = i
	}
	if v, _ := vipd.volumeAt(cfg.Admin.TokenFile); v == "" || pod.Volumes[volumes[v]].Secret == nil {
		t.Errorf("admin.token_file %s is not on a Secret volume", cfg.Admin.TokenFile)
	}
	if v, _ := vipd.volumeAt(cfg.Cluster.DataDir + "/raft"); v == "" || vipd.mountOf(v) != cfg.Cluster.DataDir ||
		pod.Volumes[volumes[v]].HostPath == nil || pod.Volumes[volumes[v]].HostPath.Path != cfg.Cluster.DataDir {
		t.Errorf("cluster.data_dir %s: want the host's %s mounted there (Raft state survives the pod)", cfg.Cluster.DataDir, cfg.Cluster.DataDir)
	}
	if v, _ := vipd.volumeAt(argAfter(vipd.Command, "--config")); v == "" || pod.Volumes[volumes[v]].EmptyDir == nil {
		t.Errorf("vipd's config is not read from the emptyDir the init container writes")
	}
	_, port, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]struct {
		probe
		path string
	}{"liveness": {vipd.LivenessProbe, "/healthz"}, "readiness": {vipd.ReadinessProbe, "/readyz"}} {
		if p.HTTPGet.Path != p.path || strconv.Itoa(p.HTTPGet.Port) != port {
			t.Errorf("%s probe GET %s on port %d; want %s on the admin port %s", name, p.HTTPGet.Path, p.HTTPGet.Port, p.path, port)
		}
	}
	if !cfg.Admin.OpenReads {
		t.Error("admin.open_reads is off: the kubelet's probes carry no credentials")
	}
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	if need := cfg.Node.ShutdownGrace + leaveTimeout(t) + closeMargin; grace < need {
		t.Errorf("terminationGracePeriodSeconds %s does not outlast the hand-over, the drain and the close (%s)", grace, need)
	}
}

// The init container refuses to write a config with a placeholder it did
// not fill in, so a node never starts with a literal "@NODE_IP@".
func TestKubernetesDaemonSetRenderRefusesAnUnknownPlaceholder(t *testing.T) {
	pod, template := loadDaemonSet(t)
	bad := map[string]string{}
	for k, v := range template {
		bad[k] = v + "# @NODE_ZONE@\n"
	}
	if _, err := renderConfig(t, pod, bad, sampleNode); err == nil {
		t.Fatal("rendered a template with @NODE_ZONE@ left in it, want the init container to fail")
	}
}

// The downward API supplies what the template needs, and both containers
// keep the static pod's security context.
func TestKubernetesDaemonSetPodSpec(t *testing.T) {
	pod, _ := loadDaemonSet(t)
	if !pod.HostNetwork || pod.ServiceAccountName != "vipd" {
		t.Errorf("hostNetwork %v, serviceAccountName %q: want the host network and the vipd service account", pod.HostNetwork, pod.ServiceAccountName)
	}
	env := map[string]string{}
	for _, e := range pod.InitContainers[0].Env {
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	if env["NODE_NAME"] != "spec.nodeName" || env["NODE_IP"] != "status.hostIP" {
		t.Errorf("init container env %v: want NODE_NAME from spec.nodeName, NODE_IP from status.hostIP", env)
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		sc := c.SecurityContext
		if sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("container %s: want privileged and allowPrivilegeEscalation false, readOnlyRootFilesystem true, seccomp RuntimeDefault", c.Name)
		}
		if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
			t.Errorf("container %s: capabilities drop %v, want ALL", c.Name, sc.Capabilities.Drop)
		}
	}
	if add := slices.Sorted(slices.Values(pod.Containers[0].SecurityContext.Capabilities.Add)); !slices.Equal(add, []string{"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"}) {
		t.Errorf("vipd adds capabilities %v, want exactly NET_ADMIN NET_BIND_SERVICE NET_RAW", add)
	}
	if add := pod.InitContainers[0].SecurityContext.Capabilities.Add; len(add) > 0 {
		t.Errorf("the init container adds capabilities %v, want none", add)
	}
	if img := pod.Containers[0].Image; img != loadStaticPod(t).Spec.Containers[0].Image {
		t.Errorf("image %q, want the static pod's", img)
	}
}

// rbacNeeds is what the Kubernetes mode does with the API, exactly: group,
// resource (with subresource) and verb.
var rbacNeeds = []string{
	"/services get", "/services list", "/services watch",
	"/services/status update", "/services/status patch",
	"discovery.k8s.io/endpointslices get", "discovery.k8s.io/endpointslices list", "discovery.k8s.io/endpointslices watch",
	"/events create", "/events patch",
	"events.k8s.io/events create", "events.k8s.io/events patch",
}

// The ClusterRole grants what rbacNeeds lists and nothing else.
func TestKubernetesClusterRoleIsLeastPrivilege(t *testing.T) {
	var role struct {
		Rules []struct {
			APIGroups       []string `yaml:"apiGroups"`
			Resources       []string `yaml:"resources"`
			Verbs           []string `yaml:"verbs"`
			ResourceNames   []string `yaml:"resourceNames"`
			NonResourceURLs []string `yaml:"nonResourceURLs"`
		} `yaml:"rules"`
	}
	manifestObject(t, loadManifest(t, daemonSetFile), "ClusterRole", "vipd", &role)
	var granted []string
	for _, r := range role.Rules {
		if len(r.ResourceNames)+len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: resourceNames and nonResourceURLs are not needed", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					granted = append(granted, g+"/"+res+" "+v)
				}
			}
		}
	}
	slices.Sort(granted)
	want := slices.Sorted(slices.Values(rbacNeeds))
	if !slices.Equal(granted, want) {
		t.Errorf("ClusterRole grants\n  %v\nwant exactly\n  %v", granted, want)
	}
}

// A real kube-apiserver (the e2e bed's, RBAC on) accepts every object of
// the manifest with strict field validation, and its authorizer gives the
// DaemonSet's service account what the mode needs and no more.
func TestKubernetesManifestAppliesAndServiceAccountIsLeastPrivilege(t *testing.T) {
	manifest, err := filepath.Abs(daemonSetFile)
	if err != nil {
		t.Fatal(err)
	}
	b, cp := bed.StartKubeBed(t, filepath.Join("..", "bin", "kube"), "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	host := b.Host("kcp")
	kubectl := func(args ...string) (string, error) { return cp.Kubectl(ctx, host, args...) }

	// The API server creates kube-system just after it reports ready.
	var out string
	for {
		out, err = kubectl("apply", "--validate=strict", "-f", manifest)
		if err == nil || !strings.Contains(out, `namespaces "kube-system" not found`) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl apply:\n%s", strings.TrimSpace(out))
	objs := loadManifest(t, daemonSetFile)
	for _, o := range objs {
		args := []string{"get", o.Kind + "/" + o.Metadata.Name, "-o", "name"}
		if o.Metadata.Namespace != "" {
			args = append(args, "-n", o.Metadata.Namespace)
		}
		if _, err := kubectl(args...); err != nil {
			t.Errorf("%s %s not stored: %v", o.Kind, o.Metadata.Name, err)
		}
	}
	// What the pods would mount is the template the render test loads.
	_, template := loadDaemonSet(t)
	stored, err := kubectl("get", "configmap", "vipd-config", "-n", "kube-system", "-o", `jsonpath={.data.vipd\.yaml}`)
	if err != nil {
		t.Fatal(err)
	}
	if stored != template["vipd.yaml"] {
		t.Errorf("the stored ConfigMap's vipd.yaml differs from the file's:\n%s", stored)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "services"}, "yes"},
		{[]string{"list", "services", "-A"}, "yes"},
		{[]string{"watch", "services", "-A"}, "yes"},
		{[]string{"update", "services", "--subresource=status"}, "yes"},
		{[]string{"patch", "services", "--subresource=status"}, "yes"},
		{[]string{"get", "endpointslices.discovery.k8s.io"}, "yes"},
		{[]string{"list", "endpointslices.discovery.k8s.io", "-A"}, "yes"},
		{[]string{"watch", "endpointslices.discovery.k8s.io", "-A"}, "yes"},
		{[]string{"create", "events", "-n", "default"}, "yes"},
		{[]string{"patch", "events", "-n", "default"}, "yes"},
		{[]string{"create", "events.events.k8s.io", "-n", "default"}, "yes"},
		{[]string{"patch", "events.events.k8s.io", "-n", "default"}, "yes"},

		{[]string{"delete", "services"}, "no"},
		{[]string{"update", "services"}, "no"},
		{[]string{"patch", "services"}, "no"},
		{[]string{"create", "services"}, "no"},
		{[]string{"get", "secrets", "-n", "kube-system"}, "no"},
		{[]string{"list", "secrets", "-A"}, "no"},
		{[]string{"list", "nodes"}, "no"},
		{[]string{"get", "nodes"}, "no"},
		{[]string{"update", "endpointslices.discovery.k8s.io"}, "no"},
		{[]string{"list", "events", "-A"}, "no"},
		{[]string{"list", "pods", "-A"}, "no"},
	} {
		args := append([]string{"auth", "can-i", "--as=" + serviceAccount}, c.args...)
		out, err := kubectl(args...)
		// can-i prints yes or no last (after any warning) and exits 1 on no.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		got := strings.TrimSpace(lines[len(lines)-1])
		if got != "yes" && got != "no" {
			t.Errorf("kubectl %s: %v", strings.Join(args, " "), err)
			continue
		}
		if got != c.want {
			t.Errorf("%s may %s: %s, want %s", serviceAccount, strings.Join(c.args, " "), got, c.want)
		}
	}
}

// The systemd example is a Kubernetes-mode node: Services supply what it
// serves.
func TestKubernetesExampleServesServices(t *testing.T) {
	cfg, err := config.Load("examples/kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if k := cfg.Kubernetes; !k.Enabled() || len(k.AddressPools) == 0 {
		t.Errorf("kubernetes section %+v: want it enabled, with address pools", k)
	}
}
