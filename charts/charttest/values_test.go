package charttest

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// valueSet is a values file the chart must render into objects the API server accepts. check
// asserts that the values reached the objects, so a value set cannot pass by being ignored.
type valueSet struct {
	name      string
	release   string // default slimvirt
	namespace string // default slimvirt
	values    string
	check     func(t *testing.T, r rendered)
}

// valueSets covers every value the templates read.
var valueSets = []valueSet{
	{
		name: "defaults",
		check: func(t *testing.T, r rendered) {
			wantArgs(t, r.container(t, "Deployment", "controller"),
				"--allow-emulation=false", "--allow-host-disk=false", "--launcher-memory-overhead=160Mi",
				"--launcher-image=slimvirt.io/launcher:dev", "--leader-election-namespace=slimvirt")
			node := r.container(t, "DaemonSet", "node")
			wantArgs(t, node, "--cni-bin-dir=/opt/cni/bin", "--cni-conf-dir=/etc/cni/net.d", "--state-dir=/var/lib/slimvirt")
			wantNoArg(t, node, "--cni-conflist=")
			wantArgs(t, r.container(t, "DaemonSet", "csi"), "--pool=default=/var/lib/slimvirt/pools/default",
				"--endpoint=unix:///var/lib/kubelet/plugins/csi.slimvirt.io/csi.sock")
			wantNoArg(t, r.container(t, "DaemonSet", "csi"), "--require-quota")
			wantClasses(t, r, map[string]class{"slimvirt": {"default", true}})
			if tol := r.daemonSet(t).Spec.Template.Spec.Tolerations; len(tol) != 1 || tol[0].Operator != corev1.TolerationOpExists {
				t.Errorf("node tolerations %v, want one with operator Exists", tol)
			}
			wantSnapshots(t, r, snapshots{crds: true, controller: true, defaultClass: true})
		},
	},
	{
		// A cluster that has the VolumeSnapshot CRDs and a snapshot controller already.
		name: "snapshots-from-the-cluster",
		values: `snapshots:
  installCRDs: false
  defaultClass: false
  controller:
    enabled: false
`,
		check: func(t *testing.T, r rendered) {
			wantSnapshots(t, r, snapshots{})
		},
	},
	{
		// The CSI driver alone: its DaemonSet containers, StorageClass and upload endpoint,
		// nothing of the controller or the node agent.
		name:   "csi-alone",
		values: "controller:\n  enabled: false\nnode:\n  agent:\n    enabled: false\n",
		check: func(t *testing.T, r rendered) {
			wantModules(t, r, []string{"csi", "csi-provisioner", "csi-resizer", "csi-snapshotter"}, nil,
				map[string]bool{"Deployment/slimvirt-controller": false, "APIService/v1alpha1.subresources.slimvirt.io": false,
					"ClusterRole/slimvirt-edit": false, "CSIDriver/csi.slimvirt.io": true, "Service/slimvirt-upload": true,
					"Service/slimvirt-node-metrics": false, "Deployment/slimvirt-snapshot-controller": true})
			wantClasses(t, r, map[string]class{"slimvirt": {"default", true}})
		},
	},
	{
		// The CNI plugin alone: the node agent that installs and chains it, nothing of the
		// controller or the CSI driver (whose upload Secret it then does not mount).
		name:   "cni-alone",
		values: "controller:\n  enabled: false\nstorage:\n  enabled: false\n",
		check: func(t *testing.T, r rendered) {
			wantModules(t, r, []string{"node"}, []string{"seed"},
				map[string]bool{"Deployment/slimvirt-controller": false, "CSIDriver/csi.slimvirt.io": false,
					"Secret/slimvirt-upload-tls": false, "Service/slimvirt-upload": false, "StorageClass/slimvirt": false,
					"Deployment/slimvirt-snapshot-controller": false, "Secret/slimvirt-signing-key": true})
			for _, v := range r.daemonSet(t).Spec.Template.Spec.Volumes {
				if v.Secret != nil && v.Secret.SecretName == "slimvirt-upload-tls" {
					t.Errorf("the node DaemonSet mounts %s, which is not installed", v.Secret.SecretName)
				}
			}
		},
	},
	{
		name:   "require-quota",
		values: "storage:\n  requireQuota: true\n",
		check: func(t *testing.T, r rendered) {
			wantArgs(t, r.container(t, "DaemonSet", "csi"), "--require-quota")
		},
	},
	{
		name:   "emulation-and-host-disk",
		values: "allowEmulation: true\nallowHostDisk: true\n",
		check: func(t *testing.T, r rendered) {
			wantArgs(t, r.container(t, "Deployment", "controller"), "--allow-emulation=true", "--allow-host-disk=true")
		},
	},
	{
		name: "two-pools-one-with-a-path",
		values: `storage:
  pools:
    - {name: default, path: ""}
    - {name: fast, path: /mnt/nvme/slimvirt}
`,
		check: func(t *testing.T, r rendered) {
			wantClasses(t, r, map[string]class{"slimvirt": {"default", true}, "slimvirt-fast": {"fast", false}})
			csi := r.container(t, "DaemonSet", "csi")
			wantArgs(t, csi, "--pool=default=/var/lib/slimvirt/pools/default", "--pool=fast=/mnt/nvme/slimvirt")
			wantHostPathMount(t, r, csi, "pool-fast", "/mnt/nvme/slimvirt")
		},
	},
	{
		name: "three-pools-no-default-class",
		values: `storage:
  defaultClass: false
  pools:
    - {name: default}
    - {name: ssd, path: /srv/ssd}
    - {name: hdd, path: /srv/hdd}
`,
		check: func(t *testing.T, r rendered) {
			wantClasses(t, r, map[string]class{"slimvirt": {"default", false}, "slimvirt-ssd": {"ssd", false}, "slimvirt-hdd": {"hdd", false}})
			csi := r.container(t, "DaemonSet", "csi")
			wantArgs(t, csi, "--pool=default=/var/lib/slimvirt/pools/default", "--pool=ssd=/srv/ssd", "--pool=hdd=/srv/hdd")
			wantHostPathMount(t, r, csi, "pool-ssd", "/srv/ssd")
			wantHostPathMount(t, r, csi, "pool-hdd", "/srv/hdd")
		},
	},
	{
		name: "cni-conflist-and-host-paths",
		values: `node:
  cni:
    binDir: /usr/libexec/cni
    confDir: /etc/kubernetes/cni/net.d
    conflist: 10-flannel.conflist
  stateDir: /var/lib/vms
  kubeletDir: /var/lib/k0s/kubelet
`,
		check: func(t *testing.T, r rendered) {
			node := r.container(t, "DaemonSet", "node")
			wantArgs(t, node, "--cni-conflist=10-flannel.conflist", "--cni-bin-dir=/usr/libexec/cni",
				"--cni-conf-dir=/etc/kubernetes/cni/net.d", "--state-dir=/var/lib/vms")
			wantHostPathMount(t, r, node, "cni-bin", "/usr/libexec/cni")
			wantHostPathMount(t, r, node, "cni-conf", "/etc/kubernetes/cni/net.d")
			csi := r.container(t, "DaemonSet", "csi")
			wantArgs(t, csi, "--kubelet-dir=/var/lib/k0s/kubelet", "--state-dir=/var/lib/vms/csi",
				"--pool=default=/var/lib/vms/pools/default",
				"--endpoint=unix:///var/lib/k0s/kubelet/plugins/csi.slimvirt.io/csi.sock")
			wantHostPathMount(t, r, csi, "kubelet", "/var/lib/k0s/kubelet")
			wantHostPath(t, r, "plugin-dir", "/var/lib/k0s/kubelet/plugins/csi.slimvirt.io")
		},
	},
	{
		name: "scheduling-and-resources",
		values: `controller:
  replicas: 2
  nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  tolerations:
    - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}
  resources:
    requests: {cpu: 100m, memory: 128Mi}
    limits: {cpu: "1", memory: 512Mi}
node:
  nodeSelector: {slimvirt.io/vms: "true", kubernetes.io/os: linux}
  tolerations:
    - {key: dedicated, operator: Equal, value: vms, effect: NoExecute, tolerationSeconds: 60}
  resources:
    requests: {cpu: 50m, memory: 64Mi}
    limits: {cpu: 500m, memory: 256Mi}
`,
		check: func(t *testing.T, r rendered) {
			dep := r.deployment(t)
			if got := dep.Spec.Replicas; got == nil || *got != 2 {
				t.Errorf("controller replicas %v, want 2", got)
			}
			pod := dep.Spec.Template.Spec
			if _, ok := pod.NodeSelector["node-role.kubernetes.io/control-plane"]; !ok || len(pod.Tolerations) != 1 {
				t.Errorf("controller nodeSelector %v tolerations %v: values not applied", pod.NodeSelector, pod.Tolerations)
			}
			if got := r.container(t, "Deployment", "controller").Resources.Limits[corev1.ResourceCPU]; got.String() != "1" {
				t.Errorf("controller CPU limit %s, want 1", &got)
			}
			pod = r.daemonSet(t).Spec.Template.Spec
			if pod.NodeSelector["slimvirt.io/vms"] != "true" || len(pod.Tolerations) != 1 || pod.Tolerations[0].Key != "dedicated" {
				t.Errorf("node nodeSelector %v tolerations %v: values not applied", pod.NodeSelector, pod.Tolerations)
			}
			if got := r.container(t, "DaemonSet", "node").Resources.Limits[corev1.ResourceMemory]; got.String() != "256Mi" {
				t.Errorf("node memory limit %s, want 256Mi", &got)
			}
		},
	},
	{
		// null removes a default map; an empty list replaces the default tolerations.
		name: "no-tolerations-no-resources",
		values: `controller:
  resources: null
node:
  tolerations: []
  resources: null
`,
		check: func(t *testing.T, r rendered) {
			if tol := r.daemonSet(t).Spec.Template.Spec.Tolerations; len(tol) != 0 {
				t.Errorf("node tolerations %v, want none", tol)
			}
			for _, kc := range [][2]string{{"Deployment", "controller"}, {"DaemonSet", "node"}} {
				if res := r.container(t, kc[0], kc[1]).Resources; len(res.Requests)+len(res.Limits) != 0 {
					t.Errorf("%s resources %v, want none", kc[1], res)
				}
			}
		},
	},
	{
		name:      "images-ports-and-release-namespace",
		release:   "vms",
		namespace: "virt-system",
		values: `images:
  controller: registry.example.com:5000/slimvirt/controller:v0.1.0
  node: registry.example.com:5000/slimvirt/node@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  launcher: registry.example.com:5000/slimvirt/launcher:v0.1.0
  csiSidecars: registry.example.com:5000/slimvirt/csi-sidecars:v0.1.0
  pullPolicy: Always
controller:
  launcherMemoryOverhead: 300Mi
storage:
  maxVolumesPerNode: 64
  uploadPort: 18443
  healthPort: 19808
  uploadService: {type: NodePort, nodePort: 30443}
node:
  accessPort: 18186
webConsole:
  enabled: true
  port: 18090
`,
		check: func(t *testing.T, r rendered) {
			ctrl := r.container(t, "Deployment", "controller")
			wantArgs(t, ctrl, "--launcher-image=registry.example.com:5000/slimvirt/launcher:v0.1.0",
				"--launcher-memory-overhead=300Mi", "--leader-election-namespace=virt-system")
			if ctrl.Image != "registry.example.com:5000/slimvirt/controller:v0.1.0" || ctrl.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("controller image %s %s: values not applied", ctrl.Image, ctrl.ImagePullPolicy)
			}
			for _, c := range r.daemonSet(t).Spec.Template.Spec.Containers {
				if !strings.HasPrefix(c.Image, "registry.example.com:5000/slimvirt/") || c.ImagePullPolicy != corev1.PullAlways {
					t.Errorf("container %s image %s %s: values not applied", c.Name, c.Image, c.ImagePullPolicy)
				}
			}
			csi := r.container(t, "DaemonSet", "csi")
			wantArgs(t, csi, "--max-volumes-per-node=64", "--upload-addr=:18443", "--health-addr=:19808")
			if p := csi.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 19808 {
				t.Errorf("csi liveness probe %v, want port 19808", p)
			}
			var svc corev1.Service
			r.convert(t, "Service", "slimvirt-upload", &svc)
			if got := svc.Spec.Ports[0].TargetPort.IntValue(); got != 18443 {
				t.Errorf("upload Service targetPort %d, want 18443", got)
			}
			if svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[0].NodePort != 30443 {
				t.Errorf("upload Service %s nodePort %d, want NodePort 30443", svc.Spec.Type, svc.Spec.Ports[0].NodePort)
			}
			wantArgs(t, ctrl, "--node-access-port=18186", "--web-console-addr=:18090", "--subresources-port=8443")
			wantArgs(t, r.container(t, "DaemonSet", "node"), "--access-addr=:18186")
			var console corev1.Service
			r.convert(t, "Service", "slimvirt-console", &console)
			if got := console.Spec.Ports[0].Port; got != 18090 {
				t.Errorf("web console Service port %d, want 18090", got)
			}
			for _, o := range r {
				if o.GetLabels()["app.kubernetes.io/instance"] != "vms" && o.GetKind() != "CustomResourceDefinition" {
					t.Errorf("%s: label app.kubernetes.io/instance %q, want vms", o, o.GetLabels()["app.kubernetes.io/instance"])
				}
			}
		},
	},
}

// rendered is what helm rendered for one value set.
type rendered []object

// convert finds an object by kind and name and converts it to its Go type.
func (r rendered) convert(t *testing.T, kind, name string, into any) {
	t.Helper()
	for _, o := range r {
		if o.GetKind() == kind && o.GetName() == name {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
				t.Fatalf("convert %s: %v", o, err)
			}
			return
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
}

func (r rendered) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	r.convert(t, "Deployment", "slimvirt-controller", &d)
	return &d
}

func (r rendered) daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	var d appsv1.DaemonSet
	r.convert(t, "DaemonSet", "slimvirt-node", &d)
	return &d
}

// container is a container of the controller Deployment or the node DaemonSet.
func (r rendered) container(t *testing.T, kind, name string) corev1.Container {
	t.Helper()
	var pod corev1.PodSpec
	switch kind {
	case "Deployment":
		pod = r.deployment(t).Spec.Template.Spec
	case "DaemonSet":
		pod = r.daemonSet(t).Spec.Template.Spec
	}
	for _, c := range pod.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s has no container %s", kind, name)
	return corev1.Container{}
}

func wantArgs(t *testing.T, c corev1.Container, args ...string) {
	t.Helper()
	for _, a := range args {
		if !slices.Contains(c.Args, a) {
			t.Errorf("container %s: no argument %s in %q", c.Name, a, c.Args)
		}
	}
}

func wantNoArg(t *testing.T, c corev1.Container, prefix string) {
	t.Helper()
	for _, a := range c.Args {
		if strings.HasPrefix(a, prefix) {
			t.Errorf("container %s: unexpected argument %s", c.Name, a)
		}
	}
}

// wantHostPath checks that the DaemonSet has a hostPath volume of that name and path.
func wantHostPath(t *testing.T, r rendered, volume, path string) {
	t.Helper()
	for _, v := range r.daemonSet(t).Spec.Template.Spec.Volumes {
		if v.Name == volume {
			if v.HostPath == nil || v.HostPath.Path != path {
				t.Errorf("volume %s is %+v, want hostPath %s", volume, v.VolumeSource, path)
			}
			return
		}
	}
	t.Errorf("no volume %s", volume)
}

// wantHostPathMount checks a hostPath volume and that c mounts it at the same path.
func wantHostPathMount(t *testing.T, r rendered, c corev1.Container, volume, path string) {
	t.Helper()
	wantHostPath(t, r, volume, path)
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == volume && m.MountPath == path }) {
		t.Errorf("container %s does not mount %s at %s: %v", c.Name, volume, path, c.VolumeMounts)
	}
}

// class is a StorageClass's pool and whether it is the cluster's default class.
type class struct {
	pool      string
	isDefault bool
}

// wantClasses checks the rendered StorageClasses, by name.
func wantClasses(t *testing.T, r rendered, want map[string]class) {
	t.Helper()
	got := map[string]class{}
	for _, o := range r {
		if o.GetKind() != "StorageClass" {
			continue
		}
		var sc storagev1.StorageClass
		r.convert(t, "StorageClass", o.GetName(), &sc)
		got[sc.Name] = class{sc.Parameters["storagePool"], sc.Annotations["storageclass.kubernetes.io/is-default-class"] == "true"}
	}
	if !maps.Equal(got, want) {
		t.Errorf("StorageClasses %+v, want %+v", got, want)
	}
}

// wantModules checks the node DaemonSet's containers and init containers, in order, and which
// objects (Kind/name) are rendered.
func wantModules(t *testing.T, r rendered, containers, inits []string, objects map[string]bool) {
	t.Helper()
	spec := r.daemonSet(t).Spec.Template.Spec
	names := func(cs []corev1.Container) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	if got := names(spec.Containers); !slices.Equal(got, containers) {
		t.Errorf("node DaemonSet containers %v, want %v", got, containers)
	}
	if got := names(spec.InitContainers); !slices.Equal(got, inits) {
		t.Errorf("node DaemonSet init containers %v, want %v", got, inits)
	}
	for ref, want := range objects {
		kind, name, _ := strings.Cut(ref, "/")
		found := slices.ContainsFunc(r, func(o object) bool { return o.GetKind() == kind && o.GetName() == name })
		if found != want {
			t.Errorf("%s rendered: %v, want %v", ref, found, want)
		}
	}
}

// snapshots is what the chart renders for volume snapshots besides the csi-snapshotter sidecar,
// which every value set has.
type snapshots struct{ crds, controller, defaultClass bool }

// wantSnapshots checks the snapshot CRDs (external-snapshotter's, unchanged but for the keep
// policy), the snapshot controller, the VolumeSnapshotClass and the csi-snapshotter sidecar.
func wantSnapshots(t *testing.T, r rendered, want snapshots) {
	t.Helper()
	sidecar := r.container(t, "DaemonSet", "csi-snapshotter")
	wantArgs(t, sidecar, "--csi-address=/csi/csi.sock", "--node-deployment")
	if !slices.ContainsFunc(sidecar.Env, func(e corev1.EnvVar) bool { return e.Name == "NODE_NAME" && e.ValueFrom != nil }) {
		t.Errorf("csi-snapshotter has no NODE_NAME from the pod's node: %v", sidecar.Env)
	}
	files, err := filepath.Glob(filepath.Join(chartDir, snapshotCRDDir, "*.yaml"))
	if err != nil || len(files) != 3 {
		t.Fatalf("snapshot CRDs in the chart: %v, %v; want 3", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var got apiextensionsv1.CustomResourceDefinition
		found := slices.ContainsFunc(r, func(o object) bool { return o.GetKind() == "CustomResourceDefinition" && o.GetName() == crd.Name })
		if found != want.crds {
			t.Errorf("CRD %s rendered: %v, want %v", crd.Name, found, want.crds)
		}
		if !found {
			continue
		}
		r.convert(t, "CustomResourceDefinition", crd.Name, &got)
		if !equality.Semantic.DeepEqual(got.Spec, crd.Spec) {
			t.Errorf("CRD %s: the rendered spec differs from %s", crd.Name, f)
		}
		if got.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s: helm uninstall would delete it, and every VolumeSnapshot with it", crd.Name)
		}
	}
	found := slices.ContainsFunc(r, func(o object) bool {
		return o.GetKind() == "Deployment" && o.GetName() == "slimvirt-snapshot-controller"
	})
	if found != want.controller {
		t.Fatalf("snapshot controller rendered: %v, want %v", found, want.controller)
	}
	if found {
		var d appsv1.Deployment
		r.convert(t, "Deployment", "slimvirt-snapshot-controller", &d)
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || len(d.Spec.Template.Spec.Containers) != 1 {
			t.Errorf("snapshot controller: replicas %v, %d containers; want 1, 1", d.Spec.Replicas, len(d.Spec.Template.Spec.Containers))
		}
		c := d.Spec.Template.Spec.Containers[0]
		wantArgs(t, c, "--leader-election", "--enable-distributed-snapshotting")
		if c.Image != r.container(t, "DaemonSet", "csi-snapshotter").Image || c.Command[0] != "/usr/bin/snapshot-controller" {
			t.Errorf("snapshot controller runs %v from %s, want snapshot-controller from the sidecars' image", c.Command, c.Image)
		}
	}
	var class snapshotv1.VolumeSnapshotClass
	r.convert(t, "VolumeSnapshotClass", "slimvirt", &class)
	if class.Driver != "csi.slimvirt.io" || class.DeletionPolicy != snapshotv1.VolumeSnapshotContentDelete {
		t.Errorf("VolumeSnapshotClass slimvirt: driver %s, deletion policy %s", class.Driver, class.DeletionPolicy)
	}
	if isDefault := class.Annotations["snapshot.storage.kubernetes.io/is-default-class"] == "true"; isDefault != want.defaultClass {
		t.Errorf("VolumeSnapshotClass slimvirt is the default: %v, want %v", isDefault, want.defaultClass)
	}
}
