package vmistatus

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestVolumeStatus: what the launcher reports of its disks (their guest device names, and the
// sizes of those that grew) becomes status.volumeStatus, in the order of spec.volumes, keeping
// what the status says of the rest; a name the VMI has no volume of is left out.
func TestVolumeStatus(t *testing.T) {
	vmi := &v1.VirtualMachineInstance{Spec: v1.VirtualMachineInstanceSpec{Volumes: []v1.Volume{{Name: "root"}, {Name: "data"}, {Name: "logs"}}}}
	all := map[string]string{"root": "vda", "data": "vdb", "logs": "sda"}
	for _, tc := range []struct {
		name    string
		current []v1.VolumeStatus
		targets map[string]string
		sizes   map[string]int64
		want    []v1.VolumeStatus
	}{
		{"nothing reported", nil, nil, nil, nil},
		{"nothing reported keeps the status", []v1.VolumeStatus{{Name: "data", Size: 7}}, nil, nil, []v1.VolumeStatus{{Name: "data", Size: 7}}},
		{"every disk with its target", nil, all, nil,
			[]v1.VolumeStatus{{Name: "root", Target: "vda"}, {Name: "data", Target: "vdb"}, {Name: "logs", Target: "sda"}}},
		{"one grew", nil, all, map[string]int64{"data": 2 << 30},
			[]v1.VolumeStatus{{Name: "root", Target: "vda"}, {Name: "data", Target: "vdb", Size: 2 << 30}, {Name: "logs", Target: "sda"}}},
		{"grew without targets", nil, nil, map[string]int64{"logs": 3, "root": 1}, []v1.VolumeStatus{{Name: "root", Size: 1}, {Name: "logs", Size: 3}}},
		{"grew again", []v1.VolumeStatus{{Name: "data", Target: "vdb", Size: 1 << 30}}, nil, map[string]int64{"data": 2 << 30},
			[]v1.VolumeStatus{{Name: "data", Target: "vdb", Size: 2 << 30}}},
		{"another one grew", []v1.VolumeStatus{{Name: "logs", Size: 5}}, nil, map[string]int64{"data": 2 << 30},
			[]v1.VolumeStatus{{Name: "data", Size: 2 << 30}, {Name: "logs", Size: 5}}},
		{"no such volume", nil, map[string]string{"nosuch": "vdz"}, map[string]int64{"nosuch": 1 << 30}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := VolumeStatus(vmi, tc.current, tc.targets, tc.sizes); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("VolumeStatus = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestApplyDiskSizes: a launcher's report of a grown disk changes its VMI's status (so the
// reporter patches it), the same report again changes nothing (so it does not).
func TestApplyDiskSizes(t *testing.T) {
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "vm", UID: "u1"},
		Spec:   v1.VirtualMachineInstanceSpec{Volumes: []v1.Volume{{Name: "data"}}},
		Status: v1.VirtualMachineInstanceStatus{Phase: v1.Running, LauncherPod: "virt-launcher-vm"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-vm", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: v1.GroupVersion.String(), Kind: "VirtualMachineInstance", Name: "vm", UID: "u1", Controller: ptr.To(true)}}}}
	st := launcherpod.Status{Phase: launcherpod.PhaseRunning, DiskSizes: map[string]int64{"data": 2 << 30}}
	if !Apply(vmi, pod, st, metav1.Now()) {
		t.Fatal("a grown disk changed nothing")
	}
	if want := []v1.VolumeStatus{{Name: "data", Size: 2 << 30}}; !reflect.DeepEqual(vmi.Status.VolumeStatus, want) {
		t.Fatalf("volumeStatus %+v, want %+v", vmi.Status.VolumeStatus, want)
	}
	if Apply(vmi, pod, st, metav1.Now()) {
		t.Error("the same report changed the status again")
	}
}
