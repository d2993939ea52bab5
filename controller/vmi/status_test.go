package vmi

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// podState builds a launcher pod in a given state for the phase-machine table.
type podState func(*corev1.Pod)

func makePod(states ...podState) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-x-abcde"}}
	for _, s := range states {
		s(pod)
	}
	return pod
}

func onNode(p *corev1.Pod) { p.Spec.NodeName = "node-1" }

func ready(p *corev1.Pod) {
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = "10.0.0.7"
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: launcherpod.ComputeContainer, Ready: true}}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
}

func notReady(p *corev1.Pod) {
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: launcherpod.ComputeContainer, Ready: false}}
}

func exited(code int32, reason, msg string) podState {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: launcherpod.ComputeContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: msg}}}}
	}
}

func deleting(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)} }

func podFailed(reason, msg string) podState {
	return func(p *corev1.Pod) { p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, reason, msg }
}

func TestPhaseMachine(t *testing.T) {
	tests := []struct {
		name       string
		from       v1.VirtualMachineInstancePhase
		pod        *corev1.Pod
		want       v1.VirtualMachineInstancePhase
		wantReason string
		wantReady  corev1.ConditionStatus
	}{
		{"new vmi without pod", "", nil, v1.Pending, "", corev1.ConditionFalse},
		{"pending without pod", v1.Pending, nil, v1.Pending, "", corev1.ConditionFalse},
		{"pod made, unscheduled", v1.Pending, makePod(), v1.Scheduling, "", corev1.ConditionFalse},
		{"pod on a node", v1.Scheduling, makePod(onNode), v1.Scheduled, "", corev1.ConditionFalse},
		{"pod skipped straight to ready", v1.Pending, makePod(onNode, ready), v1.Running, "", corev1.ConditionTrue},
		{"compute ready", v1.Scheduled, makePod(onNode, ready), v1.Running, "", corev1.ConditionTrue},
		{"running, probe fails: stays Running, not ready", v1.Running, makePod(onNode, notReady), v1.Running, "", corev1.ConditionFalse},
		{"scheduled never goes back to scheduling", v1.Scheduled, makePod(), v1.Scheduled, "", corev1.ConditionFalse},
		{"guest shut down", v1.Running, makePod(onNode, exited(0, "Completed", "")), v1.Succeeded, ReasonGuestShutdown, corev1.ConditionFalse},
		{"guest crashed", v1.Running, makePod(onNode, exited(1, "Error", "boom")), v1.Failed, ReasonGuestCrashed, corev1.ConditionFalse},
		{"setup failed before running", v1.Scheduled, makePod(onNode, exited(2, "Error", "no kvm")), v1.Failed, ReasonSetupFailed, corev1.ConditionFalse},
		{"killed by a signal", v1.Running, makePod(onNode, exited(143, "Error", "")), v1.Failed, ReasonLauncherFailed, corev1.ConditionFalse},
		{"oom killed", v1.Running, makePod(onNode, exited(137, "OOMKilled", "")), v1.Failed, "OOMKilled", corev1.ConditionFalse},
		{"pod evicted", v1.Running, makePod(onNode, podFailed("Evicted", "low memory")), v1.Failed, "Evicted", corev1.ConditionFalse},
		{"pod failed without reason", v1.Scheduled, makePod(onNode, podFailed("", "")), v1.Failed, ReasonPodFailed, corev1.ConditionFalse},
		{"pod deleting while running", v1.Running, makePod(onNode, ready, deleting), v1.Failed, ReasonLauncherPodDeleted, corev1.ConditionFalse},
		{"pod gone while running", v1.Running, nil, v1.Failed, ReasonLauncherPodDeleted, corev1.ConditionFalse},
		{"pod gone while scheduling", v1.Scheduling, nil, v1.Failed, ReasonLauncherPodDeleted, corev1.ConditionFalse},
		{"exit code wins over deletion", v1.Running, makePod(onNode, deleting, exited(0, "Completed", "")), v1.Succeeded, ReasonGuestShutdown, corev1.ConditionFalse},
		{"succeeded is final", v1.Succeeded, makePod(onNode, ready), v1.Succeeded, "", corev1.ConditionFalse},
		{"failed is final", v1.Failed, makePod(onNode, ready), v1.Failed, "", corev1.ConditionFalse},
		{"failed stays failed without pod", v1.Failed, nil, v1.Failed, "", corev1.ConditionFalse},
	}
	now := metav1.NewTime(time.Unix(1000, 0))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vmi := &v1.VirtualMachineInstance{Status: v1.VirtualMachineInstanceStatus{Phase: tt.from}}
			st := ComputeStatus(vmi, Observation{PodName: "virt-launcher-x-abcde", Pod: tt.pod}, now)
			if st.Phase != tt.want {
				t.Fatalf("phase = %s, want %s", st.Phase, tt.want)
			}
			if tt.wantReason != "" && st.Reason != tt.wantReason {
				t.Errorf("reason = %q, want %q", st.Reason, tt.wantReason)
			}
			var readyStatus corev1.ConditionStatus
			for _, c := range st.Conditions {
				if c.Type == v1.VMIReady {
					readyStatus = c.Status
				}
			}
			if readyStatus != tt.wantReady {
				t.Errorf("Ready = %q, want %q", readyStatus, tt.wantReady)
			}
			moved := st.Phase != tt.from
			n := len(st.PhaseTransitionTimestamps)
			if moved && (n == 0 || st.PhaseTransitionTimestamps[n-1].Phase != st.Phase || !st.PhaseTransitionTimestamps[n-1].PhaseTransitionTimestamp.Equal(&now)) {
				t.Errorf("no transition timestamp for %s: %+v", st.Phase, st.PhaseTransitionTimestamps)
			}
			if !moved && n != 0 {
				t.Errorf("transition timestamps without a transition: %+v", st.PhaseTransitionTimestamps)
			}
		})
	}
}

// TestComputeStatusIsStable: a second computation from the same observation changes nothing,
// so the controller writes status only when something happened.
func TestComputeStatusIsStable(t *testing.T) {
	now := metav1.NewTime(time.Unix(1000, 0))
	later := metav1.NewTime(time.Unix(2000, 0))
	for _, pod := range []*corev1.Pod{nil, makePod(), makePod(onNode), makePod(onNode, ready), makePod(onNode, exited(1, "Error", "x"))} {
		vmi := &v1.VirtualMachineInstance{}
		vmi.Status = ComputeStatus(vmi, Observation{PodName: "p", Pod: pod}, now)
		again := ComputeStatus(vmi, Observation{PodName: "p", Pod: pod}, later)
		if !equalStatus(vmi.Status, again) {
			t.Errorf("status changed on recompute:\n%+v\n%+v", vmi.Status, again)
		}
	}
}

func equalStatus(a, b v1.VirtualMachineInstanceStatus) bool {
	return a.Phase == b.Phase && len(a.Conditions) == len(b.Conditions) && len(a.PhaseTransitionTimestamps) == len(b.PhaseTransitionTimestamps) &&
		(len(a.Conditions) == 0 || a.Conditions[0] == b.Conditions[0])
}

func TestSynchronizedCondition(t *testing.T) {
	now := metav1.NewTime(time.Unix(1000, 0))
	vmi := &v1.VirtualMachineInstance{}
	vmi.Status = ComputeStatus(vmi, Observation{Problem: &Problem{ReasonPVCNotFound, "volume root: PersistentVolumeClaim x not found"}}, now)
	var found bool
	for _, c := range vmi.Status.Conditions {
		if c.Type == v1.VMISynchronized {
			found = c.Status == corev1.ConditionFalse && c.Reason == ReasonPVCNotFound
		}
	}
	if !found {
		t.Fatalf("no Synchronized=False PVCNotFound: %+v", vmi.Status.Conditions)
	}
	vmi.Status = ComputeStatus(vmi, Observation{PodName: "p", Pod: makePod()}, now)
	for _, c := range vmi.Status.Conditions {
		if c.Type == v1.VMISynchronized {
			t.Errorf("Synchronized kept after the problem went: %+v", c)
		}
	}
}

func TestInterfacesFromPod(t *testing.T) {
	vmi := &v1.VirtualMachineInstance{Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{Devices: v1.Devices{
		Interfaces: []v1.Interface{{Name: "net0", Masquerade: &v1.InterfaceMasquerade{}}}}}}}
	vmi.Status.Interfaces = []v1.VirtualMachineInstanceNetworkInterface{{MAC: "52:54:00:00:00:01"}}
	pod := makePod(onNode, ready)
	pod.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.7"}, {IP: "fd00::7"}}
	st := ComputeStatus(vmi, Observation{PodName: "p", Pod: pod}, metav1.Now())
	got := st.Interfaces[0]
	if got.Name != "net0" || got.IP != "10.0.0.7" || len(got.IPs) != 2 || got.IPs[1] != "fd00::7" || got.MAC != "52:54:00:00:00:01" {
		t.Errorf("interface = %+v", got)
	}
	if st.NodeName != "node-1" {
		t.Errorf("nodeName = %q", st.NodeName)
	}
}

// TestInitContainerRefusal: a pod that failed in its hostdisk-owner container fails the VMI
// with that container's reason (which names the path), not an empty PodFailed.
func TestInitContainerRefusal(t *testing.T) {
	vmi := &v1.VirtualMachineInstance{Status: v1.VirtualMachineInstanceStatus{Phase: v1.Scheduled}}
	pod := &corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{
		Phase: corev1.PodFailed,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: hostDiskOwner, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 1, Message: "hostDisk evil.img: a link on the way below the allowed directory: refused"}}}},
	}}
	st := ComputeStatus(vmi, Observation{PodName: "p", Pod: pod}, metav1.Now())
	if st.Phase != v1.Failed || st.Reason != ReasonSetupFailed || st.Message != "container hostdisk-owner: hostDisk evil.img: a link on the way below the allowed directory: refused" {
		t.Errorf("status = %s %s %q", st.Phase, st.Reason, st.Message)
	}
}

// TestDiskGrowths: a DiskResized event is due for each disk whose size grew between two
// versions of a VMI's status, and for none that stayed or shrank.
func TestDiskGrowths(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after []v1.VolumeStatus
		want          []string
	}{
		{"nothing", nil, nil, nil},
		{"first growth", nil, []v1.VolumeStatus{{Name: "data", Size: 2 << 30}}, []string{"data"}},
		{"same size", []v1.VolumeStatus{{Name: "data", Size: 2 << 30}}, []v1.VolumeStatus{{Name: "data", Size: 2 << 30}}, nil},
		{"grew again", []v1.VolumeStatus{{Name: "data", Size: 2 << 30}}, []v1.VolumeStatus{{Name: "data", Size: 3 << 30}}, []string{"data"}},
		{"smaller", []v1.VolumeStatus{{Name: "data", Size: 3 << 30}}, []v1.VolumeStatus{{Name: "data", Size: 2 << 30}}, nil},
		{"one of two", []v1.VolumeStatus{{Name: "data", Size: 1}, {Name: "logs", Size: 1}},
			[]v1.VolumeStatus{{Name: "data", Size: 1}, {Name: "logs", Size: 2}}, []string{"logs"}},
		{"gone", []v1.VolumeStatus{{Name: "data", Size: 1}}, nil, nil},
		{"no size", nil, []v1.VolumeStatus{{Name: "data", Target: "vdb"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, vs := range DiskGrowths(tc.before, tc.after) {
				got = append(got, vs.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("DiskGrowths = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestMemoryOverhead: status.memoryOverhead is what the launcher pod asks for besides the
// guest: the launcher's overhead and each containerDisk copier's request; with the guest's
// memory above its request (overcommitted), none is reported.
func TestMemoryOverhead(t *testing.T) {
	vmi := &v1.VirtualMachineInstance{Spec: v1.VirtualMachineInstanceSpec{
		Domain: v1.DomainSpec{Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}},
			Devices: v1.Devices{Disks: []v1.Disk{{Name: "a"}, {Name: "b"}}}},
		Volumes: []v1.Volume{
			{Name: "a", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "x"}}},
			{Name: "b", VolumeSource: v1.VolumeSource{ContainerDisk: &v1.ContainerDiskSource{Image: "y"}}},
		}}}
	vmi.Name, vmi.Namespace = "v", "ns"
	pod, err := BuildPod(testConfig(), vmi, "p", VolumeFacts{})
	if err != nil {
		t.Fatal(err)
	}
	st := ComputeStatus(vmi, Observation{PodName: "p", Pod: pod}, metav1.Now())
	// testConfig's 64Mi launcher overhead and two copiers of 8Mi.
	if st.MemoryOverhead == nil || st.MemoryOverhead.String() != "80Mi" {
		t.Errorf("memoryOverhead = %v, want 80Mi", st.MemoryOverhead)
	}
	vmi.Spec.Domain.Memory = &v1.Memory{Guest: ptr.To(resource.MustParse("1Gi"))}
	vmi.Spec.Domain.Resources.OvercommitGuestOverhead = true
	if pod, err = BuildPod(testConfig(), vmi, "p", VolumeFacts{}); err != nil {
		t.Fatal(err)
	}
	if st := ComputeStatus(vmi, Observation{PodName: "p", Pod: pod}, metav1.Now()); st.MemoryOverhead != nil {
		t.Errorf("memoryOverhead = %v for an overcommitted guest, want none", st.MemoryOverhead)
	}
}
