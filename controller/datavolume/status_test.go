package datavolume

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/csi/claim"
)

func TestStatus(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	httpDV := &v1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "fedora"},
		Spec: v1.DataVolumeSpec{Source: v1.DataVolumeSourceSpec{HTTP: &v1.DataVolumeSourceHTTP{URL: "http://x/y.img"}}}}
	uploadDV := &v1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "up"},
		Spec: v1.DataVolumeSpec{Source: v1.DataVolumeSourceSpec{Upload: &v1.DataVolumeSourceUpload{}}}}
	cloneDV := &v1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "cl"},
		Spec: v1.DataVolumeSpec{Source: v1.DataVolumeSourceSpec{PVC: &v1.DataVolumeSourcePVC{Name: "src"}}}}
	blankDV := &v1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "bl"},
		Spec: v1.DataVolumeSpec{Source: v1.DataVolumeSourceSpec{Blank: &v1.DataVolumeBlankImage{}}}}

	pvc := func(phase corev1.PersistentVolumeClaimPhase, ann map[string]string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Annotations: ann}, Status: corev1.PersistentVolumeClaimStatus{Phase: phase}}
	}
	report := func(c claim.Content) map[string]string { return claim.ReportAnnotations(c) }

	tests := []struct {
		name         string
		dv           *v1.DataVolume
		obs          Observation
		wantPhase    v1.DataVolumePhase
		wantProgress string
		wantRestarts int32
		wantReady    corev1.ConditionStatus
		wantRunning  corev1.ConditionStatus
		wantBound    corev1.ConditionStatus
	}{
		{"no pvc yet", httpDV, Observation{}, v1.DataVolumePending, "N/A", 0, "False", "False", "False"},
		{"late binding waits for a pod", httpDV, Observation{PVC: pvc(corev1.ClaimPending, nil), WaitForFirstConsumer: true},
			v1.DataVolumeWaitForFirstConsumer, "N/A", 0, "False", "False", "False"},
		{"node selected: import scheduled", httpDV, Observation{PVC: pvc(corev1.ClaimPending, map[string]string{annSelectedNode: "n1"}), WaitForFirstConsumer: true},
			v1.DataVolumeImportScheduled, "N/A", 0, "False", "False", "False"},
		{"importing", httpDV, Observation{PVC: pvc(corev1.ClaimBound, report(claim.Content{Phase: claim.PhasePopulating, Progress: "42.10%", Restarts: 1}))},
			v1.DataVolumeImportInProgress, "42.10%", 1, "False", "True", "True"},
		{"imported", httpDV, Observation{PVC: pvc(corev1.ClaimBound, report(claim.Content{Phase: claim.PhaseReady, Progress: "100.0%"}))},
			v1.DataVolumeSucceeded, "100.0%", 0, "True", "False", "True"},
		{"imported but not bound yet", httpDV, Observation{PVC: pvc(corev1.ClaimPending, report(claim.Content{Phase: claim.PhaseReady, Progress: "100.0%"}))},
			v1.DataVolumeImportScheduled, "100.0%", 0, "False", "False", "False"},
		{"import failed", httpDV, Observation{PVC: pvc(corev1.ClaimBound, report(claim.Content{Phase: claim.PhaseFailed, Message: "checksum mismatch", Progress: "99.00%"}))},
			v1.DataVolumeFailed, "99.00%", 0, "False", "False", "True"},
		{"problem fails", httpDV, Observation{Problem: &Problem{Reason: "ErrClaimNotValid", Message: "x"}},
			v1.DataVolumeFailed, "N/A", 0, "False", "False", "False"},
		{"upload scheduled", uploadDV, Observation{PVC: pvc(corev1.ClaimPending, map[string]string{annSelectedNode: "n1"})},
			v1.DataVolumeUploadScheduled, "N/A", 0, "False", "False", "False"},
		{"upload ready", uploadDV, Observation{PVC: pvc(corev1.ClaimBound, report(claim.Content{Phase: claim.PhasePending, Progress: "0.00%"}))},
			v1.DataVolumeUploadReady, "0.00%", 0, "False", "False", "True"},
		{"failed upload may be retried", uploadDV, Observation{PVC: pvc(corev1.ClaimBound, report(claim.Content{Phase: claim.PhaseFailed, Message: "client went away"}))},
			v1.DataVolumeUploadReady, "N/A", 0, "False", "False", "True"},
		{"uploaded", uploadDV, Observation{PVC: pvc(corev1.ClaimBound, report(claim.Content{Phase: claim.PhaseReady}))},
			v1.DataVolumeSucceeded, "100.0%", 0, "True", "False", "True"},
		{"cloning", cloneDV, Observation{PVC: pvc(corev1.ClaimBound, report(claim.Content{Phase: claim.PhasePopulating, Progress: "0.00%"}))},
			v1.DataVolumeCloneInProgress, "0.00%", 0, "False", "True", "True"},
		{"blank bound without report", blankDV, Observation{PVC: pvc(corev1.ClaimBound, nil)},
			v1.DataVolumeSucceeded, "100.0%", 0, "True", "False", "True"},
		{"missing credentials hold a late-binding import", httpDV, Observation{PVC: pvc(corev1.ClaimPending, nil), WaitForFirstConsumer: true,
			Wait: &Problem{Reason: "ImportSecretNotFound", Message: "Secret s not found"}},
			v1.DataVolumeImportScheduled, "N/A", 0, "False", "False", "False"},
		{"lost claim", httpDV, Observation{PVC: pvc(corev1.ClaimLost, nil)},
			v1.DataVolumeFailed, "N/A", 0, "False", "False", "False"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := Status(tt.dv, tt.obs, now)
			if st.Phase != tt.wantPhase || st.Progress != tt.wantProgress || st.RestartCount != tt.wantRestarts {
				t.Fatalf("phase %s progress %s restarts %d; want %s %s %d", st.Phase, st.Progress, st.RestartCount, tt.wantPhase, tt.wantProgress, tt.wantRestarts)
			}
			conds := map[v1.DataVolumeConditionType]corev1.ConditionStatus{}
			for _, c := range st.Conditions {
				conds[c.Type] = c.Status
			}
			if conds[v1.DataVolumeReady] != tt.wantReady || conds[v1.DataVolumeRunning] != tt.wantRunning || conds[v1.DataVolumeBound] != tt.wantBound {
				t.Fatalf("conditions %v; want Ready=%s Running=%s Bound=%s", conds, tt.wantReady, tt.wantRunning, tt.wantBound)
			}
			if st.ClaimName != tt.dv.Name {
				t.Fatalf("claimName %q", st.ClaimName)
			}
		})
	}
}

// TestConditionTimesKept: a condition that did not change keeps its transition time, so a
// status written again is equal and no update is sent.
func TestConditionTimesKept(t *testing.T) {
	dv := &v1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec: v1.DataVolumeSpec{Source: v1.DataVolumeSourceSpec{Blank: &v1.DataVolumeBlankImage{}}}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dv.Status = Status(dv, Observation{}, t0)
	again := Status(dv, Observation{}, t0.Add(time.Hour))
	for i, c := range again.Conditions {
		if !c.LastTransitionTime.Equal(&dv.Status.Conditions[i].LastTransitionTime) || !c.LastProbeTime.Equal(&dv.Status.Conditions[i].LastProbeTime) {
			t.Fatalf("condition %s times changed without a change", c.Type)
		}
	}
}
