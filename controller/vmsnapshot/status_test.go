package vmsnapshot

import (
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func TestClassFor(t *testing.T) {
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local"}, Provisioner: "csi.slimvirt.io"}
	class := func(name, driver string, def bool) snapv1.VolumeSnapshotClass {
		c := snapv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Driver: driver}
		if def {
			c.Annotations = map[string]string{defaultClassAnnotation: "true"}
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		classes []snapv1.VolumeSnapshotClass
		want    string
	}{
		{"none", nil, "no VolumeSnapshotClass for driver csi.slimvirt.io"},
		{"other driver", []snapv1.VolumeSnapshotClass{class("a", "other", true)}, "no VolumeSnapshotClass"},
		{"first by name", []snapv1.VolumeSnapshotClass{class("b", "csi.slimvirt.io", false), class("a", "csi.slimvirt.io", false)}, "a"},
		{"default wins", []snapv1.VolumeSnapshotClass{class("a", "csi.slimvirt.io", false), class("z", "csi.slimvirt.io", true)}, "z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ClassFor(sc, tc.classes)
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	snap := func(phase v1.VirtualMachineSnapshotPhase, deadline time.Duration) *v1.VirtualMachineSnapshot {
		s := &v1.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(now.Add(-time.Minute))}}
		s.Status.Phase = phase
		if deadline > 0 {
			s.Spec.FailureDeadline = &metav1.Duration{Duration: deadline}
		}
		return s
	}
	ready := v1.VirtualMachineSnapshotContentStatus{ReadyToUse: ptr.To(true), CreationTime: ptr.To(metav1.NewTime(now))}
	notReady := v1.VirtualMachineSnapshotContentStatus{ReadyToUse: ptr.To(false)}
	for _, tc := range []struct {
		name    string
		s       *v1.VirtualMachineSnapshot
		obs     Observation
		content v1.VirtualMachineSnapshotContentStatus
		phase   v1.VirtualMachineSnapshotPhase
		errMsg  string
	}{
		{"problem fails", snap("", 0), Observation{Problem: "no class"}, notReady, v1.SnapshotFailed, "no class"},
		{"in progress", snap("", 0), Observation{Content: "c"}, notReady, v1.SnapshotInProgress, ""},
		{"ready", snap(v1.SnapshotInProgress, 0), Observation{Content: "c"}, ready, v1.SnapshotSucceeded, ""},
		{"deadline passed", snap(v1.SnapshotInProgress, 30*time.Second), Observation{Content: "c", Waiting: "freeze: no node agent"}, notReady, v1.SnapshotFailed, "failure deadline 30s: freeze: no node agent"},
		{"deadline not yet", snap(v1.SnapshotInProgress, 2*time.Minute), Observation{Content: "c", Waiting: "freeze"}, notReady, v1.SnapshotInProgress, "freeze"},
		{"failed stays failed", snap(v1.SnapshotFailed, 0), Observation{Content: "c"}, ready, v1.SnapshotFailed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := Status(tc.s, tc.obs, tc.content, now)
			if st.Phase != tc.phase {
				t.Errorf("phase %s, want %s", st.Phase, tc.phase)
			}
			if tc.errMsg != "" && (st.Error == nil || !strings.Contains(*st.Error.Message, tc.errMsg)) {
				t.Errorf("error %+v, want %q", st.Error, tc.errMsg)
			}
			if again := Status(&v1.VirtualMachineSnapshot{ObjectMeta: tc.s.ObjectMeta, Spec: tc.s.Spec, Status: st}, tc.obs, tc.content, now.Add(time.Second)); tc.phase != v1.SnapshotInProgress && !equalConds(again.Conditions, st.Conditions) {
				t.Errorf("conditions changed on a second look: %+v -> %+v", st.Conditions, again.Conditions)
			}
		})
	}
}

func equalConds(a, b []v1.SnapshotCondition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
