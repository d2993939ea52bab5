package vmrestore

import (
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Observation is what the reconciler saw and did for one restore.
type Observation struct {
	// Problem fails the restore for good (a snapshot of another VM, a broken content).
	Problem string
	// Waiting says why the restore cannot go on yet (the VM runs, the snapshot is not ready);
	// Reason is the condition's reason for it.
	Waiting, Reason string
	// Restores are the volumes restored so far; Deleted the DataVolumes the restore deletes.
	Restores []v1.VolumeRestore
	Deleted  []string
	// Done is true when the VM has the restored spec and the old DataVolumes are deleted.
	Done bool
}

// Status computes a restore's status. It is pure; a complete or failed restore stays so.
func Status(old v1.VirtualMachineRestoreStatus, obs Observation, now time.Time) v1.VirtualMachineRestoreStatus {
	st := *old.DeepCopy()
	if ptr.Deref(old.Complete, false) || isFailed(old) {
		return st
	}
	if len(obs.Restores) > 0 {
		st.Restores = obs.Restores
	}
	st.DeletedDataVolumes = union(old.DeletedDataVolumes, obs.Deleted)
	set := func(t v1.SnapshotConditionType, s corev1.ConditionStatus, reason, msg string) {
		v1.SetSnapshotCondition(&st.Conditions, v1.SnapshotCondition{Type: t, Status: s, Reason: reason, Message: msg}, metav1.NewTime(now))
	}
	switch {
	case obs.Problem != "":
		st.Complete = ptr.To(false)
		set(v1.ConditionProgressing, corev1.ConditionFalse, "Failed", obs.Problem)
		set(v1.ConditionReady, corev1.ConditionFalse, "Failed", obs.Problem)
		set(v1.ConditionFailure, corev1.ConditionTrue, "Failed", obs.Problem)
	case obs.Done:
		st.Complete = ptr.To(true)
		st.RestoreTime = ptr.To(metav1.NewTime(now))
		set(v1.ConditionProgressing, corev1.ConditionFalse, "Operation complete", "")
		set(v1.ConditionReady, corev1.ConditionTrue, "Operation complete", "")
	case obs.Waiting != "":
		st.Complete = ptr.To(false)
		set(v1.ConditionProgressing, corev1.ConditionFalse, obs.Reason, obs.Waiting)
		set(v1.ConditionReady, corev1.ConditionFalse, obs.Reason, obs.Waiting)
	default:
		st.Complete = ptr.To(false)
		set(v1.ConditionProgressing, corev1.ConditionTrue, "Restoring", "")
		set(v1.ConditionReady, corev1.ConditionFalse, "Restoring", "")
	}
	return st
}

func isFailed(st v1.VirtualMachineRestoreStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == v1.ConditionFailure && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func union(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range append(append([]string(nil), a...), b...) {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}
