package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	vmicontroller "github.com/slimvirt/slimvirt/controller/vmi"
	"github.com/slimvirt/slimvirt/internal/testenv"
)

func loadExampleVMI(t *testing.T, ns string) *v1.VirtualMachineInstance {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "examples", "vmi-linux.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	vmi := &v1.VirtualMachineInstance{}
	if err := yaml.UnmarshalStrict(raw, vmi); err != nil {
		t.Fatalf("parse example: %v", err)
	}
	vmi.Namespace = ns
	return vmi
}

// TestExampleVMILifecycle walks the seed's Linux VMI through its whole life: the launcher pod
// the controller makes for it, then each phase as the (played) kubelet reports the pod.
func TestExampleVMILifecycle(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	vmi := loadExampleVMI(t, ns)
	if err := env.c.Create(ctx, vmi); err != nil {
		t.Fatalf("create example vmi: %v", err)
	}
	pod := launcherPod(t, ns, vmi.Name)
	vmi = waitPhase(t, ns, vmi.Name, v1.Scheduling)
	if vmi.Status.LauncherPod != pod.Name {
		t.Errorf("status.launcherPod = %q, pod is %q", vmi.Status.LauncherPod, pod.Name)
	}
	checkLauncherPod(t, vmi, pod)

	bindPod(t, pod, testNode)
	vmi = waitPhase(t, ns, vmi.Name, v1.Scheduled)
	if vmi.Status.NodeName != testNode {
		t.Errorf("nodeName = %q, want %q", vmi.Status.NodeName, testNode)
	}
	if c := condition(vmi, v1.VMIReady); c == nil || c.Status != corev1.ConditionFalse {
		t.Errorf("Ready condition while scheduled = %+v, want False", c)
	}

	setPodStatus(t, ns, pod.Name, runningStatus("10.244.0.17"))
	vmi = waitPhase(t, ns, vmi.Name, v1.Running)
	if len(vmi.Status.Interfaces) != 1 || vmi.Status.Interfaces[0].IP != "10.244.0.17" || vmi.Status.Interfaces[0].Name != "default" ||
		!slices.Equal(vmi.Status.Interfaces[0].IPs, []string{"10.244.0.17"}) {
		t.Errorf("interfaces = %+v, want default with 10.244.0.17", vmi.Status.Interfaces)
	}
	if c := condition(vmi, v1.VMIReady); c == nil || c.Status != corev1.ConditionTrue {
		t.Errorf("Ready condition while running = %+v, want True", c)
	}
	var phases []v1.VirtualMachineInstancePhase
	for _, p := range vmi.Status.PhaseTransitionTimestamps {
		phases = append(phases, p.Phase)
	}
	if want := []v1.VirtualMachineInstancePhase{v1.Pending, v1.Scheduling, v1.Scheduled, v1.Running}; !slices.Equal(phases, want) {
		t.Errorf("phase transitions = %v, want %v", phases, want)
	}

	setPodStatus(t, ns, pod.Name, terminatedStatus(0, "Completed", ""))
	vmi = waitPhase(t, ns, vmi.Name, v1.Succeeded)
	if vmi.Status.Reason != "GuestShutdown" {
		t.Errorf("reason = %q, want GuestShutdown", vmi.Status.Reason)
	}

	// A final phase never changes, and a final VMI gets no new pod when its pod goes.
	forceDelete(t, pod)
	eventually(t, "the VMI to stay Succeeded", func() (bool, error) {
		got := getVMI(t, ns, vmi.Name)
		if got.Status.Phase != v1.Succeeded {
			t.Fatalf("phase moved from Succeeded to %s", got.Status.Phase)
		}
		return len(podsOf(t, ns, vmi.Name)) == 0, nil
	})
	if n := len(podsOf(t, ns, vmi.Name)); n != 0 {
		t.Errorf("a final VMI got a new pod: %d pods", n)
	}
}

func checkLauncherPod(t *testing.T, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) {
	t.Helper()
	for k, want := range map[string]string{
		"special": "vmi-nocloud2", "kubevirt.io/domain": vmi.Name,
		launcherpod.LabelVMI: vmi.Name, launcherpod.LabelApp: launcherpod.AppLauncher,
	} {
		if got := pod.Labels[k]; got != want {
			t.Errorf("pod label %s = %q, want %q", k, got, want)
		}
	}
	if !metav1.IsControlledBy(pod, vmi) {
		t.Errorf("pod is not controlled by the vmi: %+v", pod.OwnerReferences)
	}
	ifaces := pod.Annotations[launcherpod.AnnotationInterfaces]
	var got []launcherpod.Interface
	if err := json.Unmarshal([]byte(ifaces), &got); err != nil || len(got) != 1 || got[0].Name != "default" || got[0].Binding != launcherpod.BindingBridge {
		t.Errorf("interfaces annotation = %s (%v), want one bridge interface named default", ifaces, err)
	}
	self := launcherpod.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
	if err := launcherpod.VerifyPod(env.key, self, ifaces, pod.Annotations[launcherpod.AnnotationSignature]); err != nil {
		t.Errorf("the interfaces signature does not verify with the controller's key: %v", err)
	}
	other := self
	other.Name = "other-pod"
	if launcherpod.VerifyPod(env.key, other, ifaces, pod.Annotations[launcherpod.AnnotationSignature]) == nil {
		t.Error("the signature verifies for another pod name")
	}
	spec := pod.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the launcher pod mounts a service account token")
	}
	if spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %s", spec.RestartPolicy)
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != 45 {
		t.Errorf("terminationGracePeriodSeconds = %v, want 45", spec.TerminationGracePeriodSeconds)
	}
	if len(spec.InitContainers) != 0 {
		t.Errorf("init containers = %+v, want none", spec.InitContainers)
	}
	var names []string
	for _, c := range spec.Containers {
		names = append(names, c.Name)
	}
	if want := []string{"container-disk-containerdisk", launcherpod.ComputeContainer}; !slices.Equal(names, want) {
		t.Fatalf("containers = %v, want %v", names, want)
	}
	cd := spec.Containers[0]
	wantCmd := []string{launcherpod.ContainerDiskCopier, "copy", "--src", "/disk", "--dst", launcherpod.ContainerDiskDir + "/containerdisk", "--stay"}
	// The guide's image without a tag: the API server defaults its pull policy to Always.
	if cd.Image != "kubevirt/fedora-cloud-container-disk-demo" || cd.ImagePullPolicy != corev1.PullAlways || !slices.Equal(cd.Command, wantCmd) {
		t.Errorf("containerDisk copier = %s %s %v", cd.Image, cd.ImagePullPolicy, cd.Command)
	}
	compute := spec.Containers[1]
	if compute.Image != launcherImage {
		t.Errorf("compute image = %s", compute.Image)
	}
	mem := compute.Resources.Requests[corev1.ResourceMemory]
	want := resource.MustParse("1024M")
	want.Add(resource.MustParse("64Mi"))
	if mem.Cmp(want) != 0 {
		t.Errorf("compute memory request = %s, want %s (the example's 1024M + 64Mi overhead)", mem.String(), want.String())
	}
	if compute.ReadinessProbe != nil || len(spec.ReadinessGates) != 1 || spec.ReadinessGates[0].ConditionType != launcherpod.ConditionDomainRunning {
		t.Errorf("readiness: probe %+v, gates %+v; want only the %s gate", compute.ReadinessProbe, spec.ReadinessGates, launcherpod.ConditionDomainRunning)
	}
	if compute.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Errorf("terminationMessagePolicy = %s", compute.TerminationMessagePolicy)
	}
	env := map[string]string{}
	for _, e := range compute.Env {
		env[e.Name] = e.Value
	}
	var passed v1.VirtualMachineInstance
	vmiJSON := pod.Annotations[launcherpod.AnnotationVMI]
	if err := json.Unmarshal([]byte(vmiJSON), &passed); err != nil {
		t.Fatalf("annotation %s is not a VMI: %v", launcherpod.AnnotationVMI, err)
	}
	if passed.Name != vmi.Name || passed.UID != vmi.UID || len(passed.Spec.Volumes) != 3 || passed.Spec.Volumes[2].CloudInitNoCloud == nil {
		t.Errorf("annotation %s = %s", launcherpod.AnnotationVMI, vmiJSON)
	}
	if sum := sha256.Sum256([]byte(vmiJSON)); env[launcherpod.EnvVMISHA256] != hex.EncodeToString(sum[:]) {
		t.Errorf("%s = %q, not the digest of the VMI annotation", launcherpod.EnvVMISHA256, env[launcherpod.EnvVMISHA256])
	}
	if env[launcherpod.EnvAllowEmulation] != "true" {
		t.Errorf("SLIMVIRT_ALLOW_EMULATION = %q", env[launcherpod.EnvAllowEmulation])
	}
}

// TestVMIFailures: each way a launcher can end badly gives a Failed VMI saying why.
func TestVMIFailures(t *testing.T) {
	needController(t)
	tests := []struct {
		name        string
		end         func(t *testing.T, pod *corev1.Pod)
		wantReason  string
		wantMessage string
	}{
		{"guest crashed", func(t *testing.T, pod *corev1.Pod) {
			setPodStatus(t, pod.Namespace, pod.Name, terminatedStatus(1, "Error", "qemu: guest panicked"))
		}, "GuestCrashed", "qemu: guest panicked"},
		{"setup failed", func(t *testing.T, pod *corev1.Pod) {
			setPodStatus(t, pod.Namespace, pod.Name, terminatedStatus(2, "Error", "no KVM and emulation is not allowed"))
		}, "SetupFailed", "no KVM and emulation is not allowed"},
		{"out of memory", func(t *testing.T, pod *corev1.Pod) {
			setPodStatus(t, pod.Namespace, pod.Name, terminatedStatus(137, "OOMKilled", ""))
		}, "OOMKilled", "the launcher was killed for using more memory than its limit"},
		{"evicted", func(t *testing.T, pod *corev1.Pod) {
			setPodStatus(t, pod.Namespace, pod.Name, func(st *corev1.PodStatus) {
				st.Phase, st.Reason, st.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
				st.ContainerStatuses = nil
			})
		}, "Evicted", "The node was low on resource: memory."},
		{"pod deleted", func(t *testing.T, pod *corev1.Pod) { forceDelete(t, pod) }, "LauncherPodDeleted", "the launcher pod was deleted while the VMI ran"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newNamespace(t)
			vmi := loadExampleVMI(t, ns)
			if err := env.c.Create(context.Background(), vmi); err != nil {
				t.Fatal(err)
			}
			pod := launcherPod(t, ns, vmi.Name)
			bindPod(t, pod, testNode)
			setPodStatus(t, ns, pod.Name, runningStatus("10.244.0.9"))
			waitPhase(t, ns, vmi.Name, v1.Running)
			tt.end(t, pod)
			got := waitPhase(t, ns, vmi.Name, v1.Failed)
			if got.Status.Reason != tt.wantReason || got.Status.Message != tt.wantMessage {
				t.Errorf("reason, message = %q, %q; want %q, %q", got.Status.Reason, got.Status.Message, tt.wantReason, tt.wantMessage)
			}
			if c := condition(got, v1.VMIReady); c == nil || c.Status != corev1.ConditionFalse || c.Reason != tt.wantReason {
				t.Errorf("Ready condition = %+v", c)
			}
		})
	}
}

// TestVMIMissingReferences: a VMI whose PVC or Secret is missing says so, and gets its pod once
// the object appears.
func TestVMIMissingReferences(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	block := corev1.PersistentVolumeBlock
	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "refs", Namespace: ns},
		Spec: v1.VirtualMachineInstanceSpec{
			Domain: v1.DomainSpec{
				Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
				Devices:   v1.Devices{Disks: []v1.Disk{{Name: "root"}, {Name: "ci"}}},
			},
			Volumes: []v1.Volume{
				{Name: "root", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "rootdisk"}}},
				{Name: "ci", VolumeSource: v1.VolumeSource{CloudInitNoCloud: &v1.CloudInitNoCloudSource{UserDataSecretRef: &corev1.LocalObjectReference{Name: "userdata"}}}},
			},
		},
	}
	if err := env.c.Create(ctx, vmi); err != nil {
		t.Fatal(err)
	}
	waitSynchronizedFalse(t, ns, vmi.Name, "PVCNotFound", "volume root: PersistentVolumeClaim rootdisk not found in namespace "+ns)
	waitEvent(t, ns, vmi.Name, "PVCNotFound")

	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "rootdisk", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeMode:  &block,
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if err := env.c.Create(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	waitSynchronizedFalse(t, ns, vmi.Name, "SecretNotFound", "volume ci: Secret userdata not found in namespace "+ns)
	if n := len(podsOf(t, ns, vmi.Name)); n != 0 {
		t.Fatalf("a pod was made while a Secret is missing: %d pods", n)
	}

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "userdata", Namespace: ns}, StringData: map[string]string{"userdata": "#cloud-config\n"}}
	if err := env.c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	pod := launcherPod(t, ns, vmi.Name)
	eventually(t, "Synchronized to clear", func() (bool, error) {
		return condition(getVMI(t, ns, vmi.Name), v1.VMISynchronized) == nil, nil
	})
	compute := computeOf(t, pod)
	if len(compute.VolumeDevices) != 1 || compute.VolumeDevices[0].DevicePath != launcherpod.BlockDir+"/root" {
		t.Errorf("block PVC devices = %+v, want one at %s/root", compute.VolumeDevices, launcherpod.BlockDir)
	}
	var mounted bool
	for _, m := range compute.VolumeMounts {
		mounted = mounted || m.MountPath == launcherpod.RunDir+"/secrets/ci"
	}
	if !mounted {
		t.Errorf("the cloud-init Secret is not mounted at %s/secrets/ci: %+v", launcherpod.RunDir, compute.VolumeMounts)
	}
}

// TestVMIEphemeralMissingPVC: an ephemeral volume whose PVC is missing says so as a
// persistentVolumeClaim does, and gets its pod once the PVC appears, with the PVC mounted
// read-only although the volume's readOnly is false.
func TestVMIEphemeralMissingPVC(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "eph", Namespace: ns},
		Spec: v1.VirtualMachineInstanceSpec{
			Domain: v1.DomainSpec{
				Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
				Devices:   v1.Devices{Disks: []v1.Disk{{Name: "root"}}},
			},
			Volumes: []v1.Volume{{Name: "root", VolumeSource: v1.VolumeSource{Ephemeral: &v1.EphemeralVolumeSource{
				PersistentVolumeClaim: v1.PersistentVolumeClaimVolumeSource{ClaimName: "golden"},
			}}}},
		},
	}
	if err := env.c.Create(ctx, vmi); err != nil {
		t.Fatal(err)
	}
	waitSynchronizedFalse(t, ns, vmi.Name, "PVCNotFound", "volume root: PersistentVolumeClaim golden not found in namespace "+ns)

	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "golden", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if err := env.c.Create(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	pod := launcherPod(t, ns, vmi.Name)
	var claim *corev1.PersistentVolumeClaimVolumeSource
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim
		}
	}
	// Published writable so that kubelet gives the volume to the launcher's group; the compute
	// container's mount below is the read-only one.
	if claim == nil || claim.ClaimName != "golden" || claim.ReadOnly {
		t.Errorf("the pod's claim = %+v, want golden published writable", claim)
	}
	var mounted bool
	for _, m := range computeOf(t, pod).VolumeMounts {
		mounted = mounted || m.MountPath == launcherpod.PVCDir+"/root" && m.ReadOnly
	}
	if !mounted {
		t.Errorf("the PVC is not mounted read-only at %s/root", launcherpod.PVCDir)
	}
}

func waitSynchronizedFalse(t *testing.T, ns, name, reason, message string) {
	t.Helper()
	eventually(t, "Synchronized=False "+reason, func() (bool, error) {
		c := condition(getVMI(t, ns, name), v1.VMISynchronized)
		if c == nil {
			return false, nil
		}
		return c.Status == corev1.ConditionFalse && c.Reason == reason && c.Message == message, nil
	})
}

func waitEvent(t *testing.T, ns, name, reason string) {
	t.Helper()
	eventually(t, "event "+reason, func() (bool, error) {
		var events eventsv1.EventList
		if err := env.c.List(context.Background(), &events, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Regarding.Name == name && e.Reason == reason {
				return true, nil
			}
		}
		return false, nil
	})
}

// TestVMIDeletion: deleting a VMI deletes its pod, and the VMI stays until the pod is gone.
func TestVMIDeletion(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	vmi := loadExampleVMI(t, ns)
	if err := env.c.Create(ctx, vmi); err != nil {
		t.Fatal(err)
	}
	pod := launcherPod(t, ns, vmi.Name)
	bindPod(t, pod, testNode)
	setPodStatus(t, ns, pod.Name, runningStatus("10.244.0.5"))
	waitPhase(t, ns, vmi.Name, v1.Running)
	if err := env.c.Delete(ctx, vmi); err != nil {
		t.Fatal(err)
	}
	// A bound pod is deleted gracefully: it stays, terminating, until the kubelet confirms.
	eventually(t, "the pod to be terminating", func() (bool, error) {
		p := &corev1.Pod{}
		err := env.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: pod.Name}, p)
		return err == nil && p.DeletionTimestamp != nil, err
	})
	if err := env.c.Get(ctx, client.ObjectKeyFromObject(vmi), &v1.VirtualMachineInstance{}); err != nil {
		t.Fatalf("the VMI went away before its pod: %v", err)
	}
	forceDelete(t, pod)
	eventually(t, "the VMI to be gone", func() (bool, error) {
		err := env.c.Get(ctx, client.ObjectKeyFromObject(vmi), &v1.VirtualMachineInstance{})
		return apierrors.IsNotFound(err), err
	})
}

// TestHostDiskNeedsPermission: hostDisk volumes mount a node directory into a privileged pod,
// so the controller makes no pod for them unless started with --allow-host-disk.
func TestHostDiskNeedsPermission(t *testing.T) {
	needController(t)
	ns := newNamespace(t)
	vmi := loadExampleVMI(t, ns)
	vmi.Spec.Volumes[1] = v1.Volume{Name: "emptydisk", VolumeSource: v1.VolumeSource{HostDisk: &v1.HostDisk{
		Path: "/data/disk.img", Type: v1.HostDiskExistsOrCreate, Capacity: ptr.To(resource.MustParse("1Gi"))}}}
	if err := env.c.Create(context.Background(), vmi); err != nil {
		t.Fatal(err)
	}
	waitSynchronizedFalse(t, ns, vmi.Name, "HostDiskNotAllowed",
		"volume emptydisk: hostDisk volumes are turned off in this cluster (the controller's --allow-host-disk flag)")
	waitEvent(t, ns, vmi.Name, "HostDiskNotAllowed")
	if n := len(podsOf(t, ns, vmi.Name)); n != 0 {
		t.Errorf("%d pods made for a forbidden hostDisk", n)
	}
}

// TestVMIDiskResizedEvent: when the node agent raises a disk's size in a running VMI's
// status.volumeStatus, the VMI gets one DiskResized event saying how large the disk is now; a
// status change that grows nothing adds none, and a second growth adds its own.
func TestVMIDiskResizedEvent(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	vm := loadExampleVMI(t, ns)
	if err := env.c.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	runVMI(t, ns, vm.Name)

	// What the node agent writes (nodeagent/vmistatus).
	setVolumeStatus := func(vs []v1.VolumeStatus, guestOS string) {
		t.Helper()
		cur := getVMI(t, ns, vm.Name)
		before := cur.DeepCopy()
		cur.Status.VolumeStatus = vs
		cur.Status.GuestOSInfo = &v1.GuestOSInfo{Name: guestOS}
		if err := env.c.Status().Patch(ctx, cur, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			t.Fatal(err)
		}
	}
	notes := func() []string {
		var events eventsv1.EventList
		if err := env.c.List(ctx, &events, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range events.Items {
			if e.Regarding.Name == vm.Name && e.Reason == vmicontroller.EventDiskResized {
				if e.Series != nil {
					t.Errorf("event %q repeated %d times", e.Note, e.Series.Count)
				}
				out = append(out, e.Note)
			}
		}
		slices.Sort(out)
		return out
	}
	waitNotes := func(want ...string) {
		t.Helper()
		eventually(t, "DiskResized events", func() (bool, error) {
			return slices.Equal(notes(), want), nil
		})
	}

	setVolumeStatus([]v1.VolumeStatus{{Name: "emptydisk", Size: 2 << 30}}, "a")
	first := "disk emptydisk grew to 2147483648 bytes"
	waitNotes(first)

	setVolumeStatus([]v1.VolumeStatus{{Name: "emptydisk", Size: 2 << 30}}, "b")
	time.Sleep(2 * time.Second) // the controller has seen the change
	if got := notes(); !slices.Equal(got, []string{first}) {
		t.Errorf("after a change that grew nothing: DiskResized events %q, want only %q", got, first)
	}

	setVolumeStatus([]v1.VolumeStatus{{Name: "emptydisk", Size: 3 << 30}}, "b")
	waitNotes(first, "disk emptydisk grew to 3221225472 bytes")
}
