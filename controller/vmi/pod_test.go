package vmi

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func testConfig() PodConfig {
	return PodConfig{LauncherImage: "launcher:t", SigningKey: []byte("k"), MemoryOverhead: resource.MustParse("64Mi"), AllowHostDisk: true, HostDiskDirs: []string{"/srv/disks", "/data"}}
}

func baseVMI() *v1.VirtualMachineInstance {
	return &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "vm1", Namespace: "ns", UID: "uid-1", Labels: map[string]string{"app": "web"}},
		Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{
			Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}},
		}},
	}
}

func mustBuild(t *testing.T, vmi *v1.VirtualMachineInstance, facts VolumeFacts) *corev1.Pod {
	t.Helper()
	pod, err := BuildPod(testConfig(), vmi, "virt-launcher-vm1-abcde", facts)
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func TestComputeResources(t *testing.T) {
	tests := []struct {
		name             string
		res              v1.ResourceRequirements
		guest            string
		wantReq, wantLim string
	}{
		{"request plus overhead", v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}, "", "1088Mi", ""},
		{"guest memory only", v1.ResourceRequirements{}, "512Mi", "576Mi", ""},
		{"request wins over guest", v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}, "512Mi", "1088Mi", ""},
		{"limit raised too", v1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}}, "", "1088Mi", "2112Mi"},
		{"overcommit leaves the overhead out", v1.ResourceRequirements{OvercommitGuestOverhead: true,
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}, "", "1Gi", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vmi := baseVMI()
			vmi.Spec.Domain.Resources = tt.res
			if tt.guest != "" {
				vmi.Spec.Domain.Memory = &v1.Memory{Guest: ptr.To(resource.MustParse(tt.guest))}
			}
			got, err := computeResources(testConfig(), vmi)
			if err != nil {
				t.Fatal(err)
			}
			req := got.Requests[corev1.ResourceMemory]
			if req.Cmp(resource.MustParse(tt.wantReq)) != 0 {
				t.Errorf("memory request = %s, want %s", req.String(), tt.wantReq)
			}
			lim, ok := got.Limits[corev1.ResourceMemory]
			if tt.wantLim == "" && ok || tt.wantLim != "" && lim.Cmp(resource.MustParse(tt.wantLim)) != 0 {
				t.Errorf("memory limit = %s (set %v), want %q", lim.String(), ok, tt.wantLim)
			}
		})
	}
}

// TestComputeCPURequest: a launcher pod always requests CPU (a HorizontalPodAutoscaler on CPU
// needs it): the VMI's request, else its limit, else its vCPUs' share at the allocation ratio.
func TestComputeCPURequest(t *testing.T) {
	cpu := func(s string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(s)}
	}
	tests := []struct {
		name  string
		ratio int
		cpu   *v1.CPU
		res   v1.ResourceRequirements
		want  string
	}{
		{"one vCPU at KubeVirt's ratio", 0, nil, v1.ResourceRequirements{}, "100m"},
		{"the guide's 4 cores", 10, &v1.CPU{Cores: 4}, v1.ResourceRequirements{}, "400m"},
		{"sockets x cores x threads", 10, &v1.CPU{Sockets: 2, Cores: 2, Threads: 2}, v1.ResourceRequirements{}, "800m"},
		{"a denser ratio", 100, nil, v1.ResourceRequirements{}, "10m"},
		{"rounded up to a millicore", 3, nil, v1.ResourceRequirements{}, "334m"},
		{"the VMI's request wins", 10, &v1.CPU{Cores: 4}, v1.ResourceRequirements{Requests: cpu("1500m")}, "1500m"},
		{"a limit alone is the request", 10, nil, v1.ResourceRequirements{Limits: cpu("2")}, "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vmi := baseVMI()
			vmi.Spec.Domain.CPU = tt.cpu
			vmi.Spec.Domain.Resources = tt.res
			vmi.Spec.Domain.Memory = &v1.Memory{Guest: ptr.To(resource.MustParse("64Mi"))}
			cfg := testConfig()
			cfg.CPUAllocationRatio = tt.ratio
			got, err := computeResources(cfg, vmi)
			if err != nil {
				t.Fatal(err)
			}
			if req, ok := got.Requests[corev1.ResourceCPU]; !ok || req.Cmp(resource.MustParse(tt.want)) != 0 {
				t.Errorf("CPU request = %s (set %v), want %s", req.String(), ok, tt.want)
			}
		})
	}
}

func TestLauncherInterfaces(t *testing.T) {
	tests := []struct {
		name       string
		interfaces []v1.Interface
		networks   []v1.Network
		autoattach *bool
		want       string
	}{
		{"none listed: default bridge", nil, nil, nil, `[{"name":"default","binding":"bridge","tapOwner":107}]`},
		{"none listed, autoattach off", nil, nil, ptr.To(false), `[]`},
		{"bridge with mac", []v1.Interface{{Name: "default", Bridge: &v1.InterfaceBridge{}, MacAddress: "02:00:00:00:00:01"}}, nil, nil,
			`[{"name":"default","binding":"bridge","mac":"02:00:00:00:00:01","tapOwner":107}]`},
		{"masquerade with ports and cidr", []v1.Interface{{Name: "default", Masquerade: &v1.InterfaceMasquerade{}, Ports: []v1.Port{{Port: 80}, {Port: 53, Protocol: "UDP"}}}},
			[]v1.Network{{Name: "default", NetworkSource: v1.NetworkSource{Pod: &v1.PodNetwork{VMNetworkCIDR: "10.11.0.0/24"}}}}, nil,
			`[{"name":"default","binding":"masquerade","vmNetworkCIDR":"10.11.0.0/24","ports":[{"protocol":"TCP","port":80},{"protocol":"UDP","port":53}],"tapOwner":107}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vmi := baseVMI()
			vmi.Spec.Domain.Devices.Interfaces = tt.interfaces
			vmi.Spec.Domain.Devices.AutoattachPodInterface = tt.autoattach
			vmi.Spec.Networks = tt.networks
			raw, _ := json.Marshal(launcherInterfaces(vmi))
			if string(raw) != tt.want {
				t.Errorf("got %s\nwant %s", raw, tt.want)
			}
		})
	}
}

// TestPodVolumesEphemeral: an ephemeral volume's PVC is mounted read-only, whatever its
// readOnly says, on a filesystem PVC and on a block one.
func TestPodVolumesEphemeral(t *testing.T) {
	vmi := baseVMI()
	eph := func(claim string) v1.VolumeSource {
		return v1.VolumeSource{Ephemeral: &v1.EphemeralVolumeSource{PersistentVolumeClaim: v1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
	}
	vmi.Spec.Volumes = []v1.Volume{{Name: "root", VolumeSource: eph("golden")}, {Name: "raw", VolumeSource: eph("golden-blk")}}
	pod := mustBuild(t, vmi, VolumeFacts{
		Block:     map[string]bool{"raw": true},
		ClaimName: map[string]string{"root": "golden", "raw": "golden-blk"},
	})
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	// The block PVC is published read-only; the filesystem one is read-only in the container,
	// so that kubelet still gives it to the launcher's group.
	for name, want := range map[string]struct {
		claim    string
		readOnly bool
	}{"pvc-root": {"golden", false}, "pvc-raw": {"golden-blk", true}} {
		if v := vols[name]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != want.claim || v.PersistentVolumeClaim.ReadOnly != want.readOnly {
			t.Errorf("%s = %+v, want claim %s published with readOnly %v", name, v, want.claim, want.readOnly)
		}
	}
	compute := computeOf(t, pod)
	var mounted bool
	for _, m := range compute.VolumeMounts {
		if m.Name == "pvc-root" {
			mounted = m.MountPath == launcherpod.PVCDir+"/root" && m.ReadOnly
		}
	}
	if !mounted {
		t.Errorf("pvc-root is not mounted read-only at %s/root: %+v", launcherpod.PVCDir, compute.VolumeMounts)
	}
	if len(compute.VolumeDevices) != 1 || compute.VolumeDevices[0].Name != "pvc-raw" || compute.VolumeDevices[0].DevicePath != launcherpod.BlockDir+"/raw" {
		t.Errorf("devices = %+v", compute.VolumeDevices)
	}
}

func TestPodVolumes(t *testing.T) {
	vmi := baseVMI()
	vmi.Spec.Volumes = []v1.Volume{
		{Name: "cd", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "img:1", Path: "/disk/os.qcow2", ImagePullPolicy: corev1.PullNever}}},
		{Name: "fs", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "claim-fs", ReadOnly: true}}},
		{Name: "blk", VolumeSource: v1.VolumeSource{DataVolume: &v1.DataVolumeSource{Name: "dv-blk"}}},
		{Name: "host", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{Path: "/data/win/disk.img", Type: v1.HostDiskExistsOrCreate, Capacity: ptr.To(resource.MustParse("1Gi"))}}},
		{Name: "ci", VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{
			UserDataSecretRef: &corev1.LocalObjectReference{Name: "ud"}, NetworkDataSecretRef: &corev1.LocalObjectReference{Name: "nd"}}}},
		{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDisk: &v1.EmptyDiskSource{Capacity: resource.MustParse("1Gi")}}},
	}
	pod := mustBuild(t, vmi, VolumeFacts{
		Block:     map[string]bool{"blk": true},
		ClaimName: map[string]string{"fs": "claim-fs", "blk": "dv-blk"},
	})
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	if v := vols["pvc-fs"]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "claim-fs" || v.PersistentVolumeClaim.ReadOnly {
		t.Errorf("pvc-fs = %+v, want claim-fs published writable (the container's mount is the read-only one)", v)
	}
	if v := vols["pvc-blk"]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "dv-blk" {
		t.Errorf("pvc-blk = %+v", v)
	}
	// The image, not its directory; the allowed directory is the owner container's, read-only.
	if v := vols["hostdisk-host"]; v.HostPath == nil || v.HostPath.Path != "/data/win/disk.img" || *v.HostPath.Type != corev1.HostPathFileOrCreate {
		t.Errorf("hostdisk-host = %+v", v)
	}
	if v := vols["hostdisk-dir-1"]; v.HostPath == nil || v.HostPath.Path != "/data" || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("hostdisk-dir-1 = %+v", v)
	}
	if v := vols["secret-ci"]; v.Projected == nil || len(v.Projected.Sources) != 2 {
		t.Errorf("secret-ci = %+v", v)
	}
	if _, ok := vols["cd-cd"]; !ok {
		t.Error("no emptyDir for the containerDisk")
	}
	// The VMI, as a file of the pod's annotation.
	if v := vols[vmiVolume]; v.DownwardAPI == nil || len(v.DownwardAPI.Items) != 1 ||
		v.DownwardAPI.Items[0].FieldRef.FieldPath != "metadata.annotations['slimvirt.io/vmi']" || v.DownwardAPI.Items[0].Path != "vmi.json" {
		t.Errorf("%s = %+v", vmiVolume, v)
	}
	if len(vols) != 9 {
		t.Errorf("%d volumes, want 9 (run, libvirt, vmi, cd, 2 pvcs, hostdisk image and directory, secret): %v", len(vols), pod.Spec.Volumes)
	}
	compute := computeOf(t, pod)
	mounts := map[string]string{}
	for _, m := range compute.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	for path, name := range map[string]string{
		launcherpod.RunDir:                         runVolume,
		launcherpod.LibvirtRunDir:                  libvirtVolume,
		launcherpod.VMIDir:                         vmiVolume,
		launcherpod.ContainerDiskDir + "/cd":       "cd-cd",
		launcherpod.PVCDir + "/fs":                 "pvc-fs",
		launcherpod.HostDiskDir + "/host/disk.img": "hostdisk-host",
		launcherpod.SecretsDir + "/ci":             "secret-ci",
	} {
		if mounts[path] != name {
			t.Errorf("mount at %s = %q, want %q", path, mounts[path], name)
		}
	}
	if len(compute.VolumeDevices) != 1 || compute.VolumeDevices[0].DevicePath != launcherpod.BlockDir+"/blk" {
		t.Errorf("devices = %+v", compute.VolumeDevices)
	}
	for _, m := range compute.VolumeMounts {
		if m.Name == vmiVolume && !m.ReadOnly {
			t.Errorf("the compute container may write its VMI: %+v", m)
		}
		if m.Name == "pvc-fs" && !m.ReadOnly {
			t.Errorf("the compute container may write the read-only PVC claim-fs: %+v", m)
		}
		if m.Name == "hostdisk-dir-1" {
			t.Errorf("the compute container mounts the allowed hostDisk directory: %+v", m)
		}
	}
	// The copier comes from the node's seed and runs next to the launcher, which waits for
	// its copy: hostdisk-owner is the only init container.
	if len(pod.Spec.Containers) != 2 {
		t.Fatalf("containers = %d, want the containerDisk copier and compute", len(pod.Spec.Containers))
	}
	cd := pod.Spec.Containers[0]
	if cd.Name != "container-disk-cd" || !slices.Equal(cd.Command, []string{launcherpod.ContainerDiskCopier, "copy", "--src", "/disk/os.qcow2", "--dst", launcherpod.ContainerDiskDir + "/cd", "--stay"}) || cd.ImagePullPolicy != corev1.PullNever {
		t.Errorf("containerDisk copier = %s %v %s", cd.Name, cd.Command, cd.ImagePullPolicy)
	}
	if names := containerNames(pod.Spec.InitContainers); !slices.Equal(names, []string{hostDiskOwner}) {
		t.Errorf("init containers = %v, want only %s", names, hostDiskOwner)
	}
	// The node's seed (the copier binary) comes from the seed device plugin, for each
	// container that asks for it.
	for _, c := range []corev1.Container{cd, compute} {
		if q := c.Resources.Limits[launcherpod.ResourceSeed]; q.Value() != 1 {
			t.Errorf("container %s asks for %s of %s, want 1", c.Name, q.String(), launcherpod.ResourceSeed)
		}
	}
}

// computeOf is the pod's compute container.
func computeOf(t *testing.T, pod *corev1.Pod) corev1.Container {
	t.Helper()
	for _, c := range pod.Spec.Containers {
		if c.Name == launcherpod.ComputeContainer {
			return c
		}
	}
	t.Fatalf("no %s container in %v", launcherpod.ComputeContainer, containerNames(pod.Spec.Containers))
	return corev1.Container{}
}

func containerNames(cs []corev1.Container) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}

func TestPodScheduling(t *testing.T) {
	vmi := baseVMI()
	vmi.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	vmi.Spec.Tolerations = []corev1.Toleration{{Key: "vm", Operator: corev1.TolerationOpExists}}
	vmi.Spec.PriorityClassName = "high"
	vmi.Spec.Hostname = "web1"
	vmi.Spec.Subdomain = "vms"
	vmi.Spec.TerminationGracePeriodSeconds = ptr.To(int64(120))
	vmi.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}}
	pod := mustBuild(t, vmi, VolumeFacts{})
	s := pod.Spec
	if s.NodeSelector["disk"] != "ssd" || len(s.Tolerations) != 1 || s.PriorityClassName != "high" || s.Hostname != "web1" || s.Subdomain != "vms" || s.Affinity == nil {
		t.Errorf("scheduling fields not copied: %+v", s)
	}
	if *s.TerminationGracePeriodSeconds != 135 {
		t.Errorf("grace = %d, want 135", *s.TerminationGracePeriodSeconds)
	}
	if pod.Labels["app"] != "web" || pod.Labels[launcherpod.LabelVMI] != "vm1" {
		t.Errorf("labels = %v", pod.Labels)
	}
}

// TestPodLeastPrivilege: the launcher pod runs as uid 107 with no privileges, only the two
// network capabilities, devices from the device plugins and no service account token; only a
// VMI with a hostDisk gets the root init container that changes the hostDisk's owner.
func TestPodLeastPrivilege(t *testing.T) {
	vmi := baseVMI()
	vmi.Spec.Volumes = []v1.Volume{
		{Name: "cd", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "img:1"}}},
		{Name: "host", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{Path: "/data/win/disk.img", Type: v1.HostDiskExistsOrCreate, Capacity: ptr.To(resource.MustParse("1Gi"))}}},
	}
	pod := mustBuild(t, vmi, VolumeFacts{})
	ps := pod.Spec.SecurityContext
	if ps == nil || *ps.RunAsUser != 107 || *ps.RunAsGroup != 107 || *ps.FSGroup != 107 {
		t.Fatalf("pod security context = %+v, want uid/gid/fsGroup 107", ps)
	}
	if ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp profile = %+v, want RuntimeDefault", ps.SeccompProfile)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the launcher pod mounts a service account token")
	}
	c := computeOf(t, pod).SecurityContext
	if *c.Privileged || !*c.RunAsNonRoot || !slices.Equal(c.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(c.Capabilities.Add, []corev1.Capability{"NET_BIND_SERVICE"}) {
		t.Errorf("compute security context = %+v %+v", c, c.Capabilities)
	}
	limits := computeOf(t, pod).Resources.Limits
	if q := limits[launcherpod.ResourceTun]; q.Value() != 1 {
		t.Errorf("tun limit = %s, want 1", q.String())
	}
	if q := limits[launcherpod.ResourceKVM]; q.Value() != 1 {
		t.Errorf("kvm limit = %s, want 1 (emulation is not allowed)", q.String())
	}
	var owner *corev1.Container
	for i, ic := range pod.Spec.InitContainers {
		if ic.Name == hostDiskOwner {
			owner = &pod.Spec.InitContainers[i]
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == launcherpod.ComputeContainer {
			continue
		}
		if c.SecurityContext == nil || !*c.SecurityContext.RunAsNonRoot || *c.SecurityContext.AllowPrivilegeEscalation || len(c.SecurityContext.Capabilities.Add) != 0 {
			t.Errorf("copier %s: security context %+v", c.Name, c.SecurityContext)
		}
	}
	if owner == nil {
		t.Fatal("no hostdisk-owner init container for a VMI with a hostDisk")
	}
	if *owner.SecurityContext.RunAsUser != 0 || !slices.Equal(owner.SecurityContext.Capabilities.Add, []corev1.Capability{"CHOWN"}) ||
		!slices.Equal(owner.Command[len(owner.Command)-4:], []string{launcherpod.HostDiskDir + "/host/disk.img", hostDiskDirsMount + "/1", "win/disk.img", "1073741824"}) {
		t.Errorf("hostdisk-owner = %v %+v", owner.Command, owner.SecurityContext)
	}

	cfg := testConfig()
	cfg.AllowEmulation = true
	vmi.Spec.Volumes = vmi.Spec.Volumes[:0]
	vmi.Spec.Domain.Devices.Disks = nil
	vmi.Spec.Domain.Devices.AutoattachPodInterface = ptr.To(false)
	p2, err := BuildPod(cfg, vmi, "virt-launcher-vm1-x", VolumeFacts{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := computeOf(t, p2).Resources.Limits[launcherpod.ResourceKVM]; ok {
		t.Error("kvm requested although emulation is allowed")
	}
	if _, ok := computeOf(t, p2).Resources.Limits[launcherpod.ResourceTun]; ok {
		t.Error("tun requested for a VMI without interfaces")
	}
	for _, ic := range p2.Spec.InitContainers {
		if ic.Name == hostDiskOwner {
			t.Error("hostdisk-owner for a VMI without hostDisks")
		}
	}
}

func TestDNSLabel(t *testing.T) {
	long := strings.Repeat("a", 63)
	got := dnsLabel("container-disk-", long)
	if len(got) > 63 || !strings.HasPrefix(got, "container-disk-") {
		t.Errorf("dnsLabel = %q (%d)", got, len(got))
	}
	if other := dnsLabel("container-disk-", strings.Repeat("a", 62)+"b"); other == got {
		t.Error("two long names collide")
	}
	if got := dnsLabel("pvc-", "root"); got != "pvc-root" {
		t.Errorf("short name changed: %q", got)
	}
}

func TestKernelBoot(t *testing.T) {
	vmi := baseVMI()
	vmi.Spec.Domain.Firmware = &v1.Firmware{KernelBoot: &v1.KernelBoot{Container: &v1.KernelBootContainer{
		Image: "kernels:1", KernelPath: "/boot/vmlinuz", InitrdPath: "/boot/initrd.gz"}}}
	pod := mustBuild(t, vmi, VolumeFacts{})
	if names := containerNames(pod.Spec.Containers); !slices.Equal(names, []string{"kernel-boot-kernel", "kernel-boot-initrd", launcherpod.ComputeContainer}) {
		t.Fatalf("containers = %v", names)
	}
	if len(pod.Spec.InitContainers) != 0 {
		t.Errorf("init containers = %v, want none", containerNames(pod.Spec.InitContainers))
	}
	k := pod.Spec.Containers[0]
	if k.Image != "kernels:1" || !slices.Equal(k.Command, []string{launcherpod.ContainerDiskCopier, "copy", "--src", "/boot/vmlinuz", "--dst", launcherpod.KernelBootDir, "--as", "kernel", "--stay"}) {
		t.Errorf("kernel copier = %s %v", k.Image, k.Command)
	}
	var mounted bool
	for _, m := range computeOf(t, pod).VolumeMounts {
		mounted = mounted || m.MountPath == launcherpod.KernelBootDir
	}
	if !mounted {
		t.Error("compute does not mount the kernel-boot volume")
	}
}
