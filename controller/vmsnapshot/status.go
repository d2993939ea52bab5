package vmsnapshot

import (
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Observation is what the reconciler saw and did for one snapshot.
type Observation struct {
	// Problem fails the snapshot for good: a source that is not a VM of the namespace, a disk
	// without a VolumeSnapshotClass.
	Problem string
	// Waiting says why the snapshot cannot go on yet (a freeze that failed); it is retried
	// until the failure deadline.
	Waiting string
	// SourceUID is the VM's; Content is the content's name once it exists.
	SourceUID string
	Content   string
	Included  []string
	Excluded  []string
	// Indications are how the copy was taken (set when the VolumeSnapshots were made).
	Indications []v1.Indication
	// VolumeSnapshots are the content's VolumeSnapshots, by name; a missing one is nil.
	VolumeSnapshots map[string]*snapv1.VolumeSnapshot
	// Expected are the names of the VolumeSnapshots the content lists.
	Expected []string
}

// VolumeStatuses mirrors the VolumeSnapshots' statuses into the content's.
func VolumeStatuses(obs Observation) []v1.VolumeSnapshotStatus {
	var out []v1.VolumeSnapshotStatus
	for _, name := range obs.Expected {
		st := v1.VolumeSnapshotStatus{VolumeSnapshotName: name, ReadyToUse: ptr.To(false)}
		if vs := obs.VolumeSnapshots[name]; vs != nil && vs.Status != nil {
			st.CreationTime = vs.Status.CreationTime
			st.ReadyToUse = ptr.To(ptr.Deref(vs.Status.ReadyToUse, false))
			st.RestoreSize = vs.Status.RestoreSize
			if e := vs.Status.Error; e != nil {
				st.Error = &v1.SnapshotError{Time: e.Time, Message: e.Message}
			}
		}
		out = append(out, st)
	}
	return out
}

// ContentStatus is the content's status: ready when every VolumeSnapshot is.
func ContentStatus(old v1.VirtualMachineSnapshotContentStatus, vols []v1.VolumeSnapshotStatus, now time.Time) v1.VirtualMachineSnapshotContentStatus {
	st := v1.VirtualMachineSnapshotContentStatus{VolumeSnapshotStatus: vols, CreationTime: old.CreationTime}
	ready := true
	for _, v := range vols {
		ready = ready && ptr.Deref(v.ReadyToUse, false)
		if v.Error != nil {
			st.Error = v.Error
		}
	}
	st.ReadyToUse = ptr.To(ready)
	if ready && st.CreationTime == nil {
		st.CreationTime = ptr.To(metav1.NewTime(now))
	}
	return st
}

// Status computes a snapshot's status from what was observed. It is pure: condition times
// are kept from old unless the condition changed, and a finished snapshot stays finished.
func Status(s *v1.VirtualMachineSnapshot, obs Observation, content v1.VirtualMachineSnapshotContentStatus, now time.Time) v1.VirtualMachineSnapshotStatus {
	old := s.Status
	st := *old.DeepCopy()
	if obs.SourceUID != "" {
		st.SourceUID = ptr.To(types.UID(obs.SourceUID))
	}
	if obs.Content != "" {
		st.VirtualMachineSnapshotContentName = ptr.To(obs.Content)
	}
	if len(obs.Included)+len(obs.Excluded) > 0 {
		st.SnapshotVolumes = &v1.SnapshotVolumesLists{IncludedVolumes: obs.Included, ExcludedVolumes: obs.Excluded}
	}
	if len(obs.Indications) > 0 {
		st.Indications = obs.Indications
	}
	if old.Phase == v1.SnapshotFailed {
		return st
	}
	deadline := s.Spec.FailureDeadline
	overdue := deadline != nil && deadline.Duration > 0 && old.Phase != v1.SnapshotSucceeded &&
		now.Sub(s.CreationTimestamp.Time) > deadline.Duration
	ready := obs.Content != "" && content.ReadyToUse != nil && *content.ReadyToUse
	switch {
	case obs.Problem != "":
		fail(&st, "Failed", obs.Problem, now)
	case overdue && !ready:
		msg := "snapshot did not finish within the failure deadline " + deadline.Duration.String()
		if obs.Waiting != "" {
			msg += ": " + obs.Waiting
		} else if content.Error != nil && content.Error.Message != nil {
			msg += ": " + *content.Error.Message
		}
		fail(&st, "FailureDeadlineExceeded", msg, now)
	case ready:
		st.Phase = v1.SnapshotSucceeded
		st.ReadyToUse = ptr.To(true)
		st.CreationTime = content.CreationTime
		st.Error = nil
		setCondition(&st.Conditions, v1.ConditionProgressing, corev1.ConditionFalse, "Operation complete", "", now)
		setCondition(&st.Conditions, v1.ConditionReady, corev1.ConditionTrue, "Operation complete", "", now)
	default:
		st.Phase = v1.SnapshotInProgress
		st.ReadyToUse = ptr.To(false)
		msg, reason := "", "Source locked and operation in progress"
		switch {
		case obs.Waiting != "":
			reason, msg = "Waiting", obs.Waiting
			st.Error = errorAt(old.Error, obs.Waiting, now)
		case content.Error != nil:
			st.Error = content.Error
		}
		if old.Phase == v1.SnapshotSucceeded {
			// A VolumeSnapshot went away or broke after the snapshot was complete.
			reason = "Not ready"
		}
		setCondition(&st.Conditions, v1.ConditionProgressing, corev1.ConditionTrue, reason, msg, now)
		setCondition(&st.Conditions, v1.ConditionReady, corev1.ConditionFalse, "Not ready", "", now)
	}
	return st
}

func fail(st *v1.VirtualMachineSnapshotStatus, reason, msg string, now time.Time) {
	st.Phase = v1.SnapshotFailed
	st.ReadyToUse = ptr.To(false)
	st.Error = errorAt(st.Error, msg, now)
	setCondition(&st.Conditions, v1.ConditionProgressing, corev1.ConditionFalse, reason, msg, now)
	setCondition(&st.Conditions, v1.ConditionReady, corev1.ConditionFalse, reason, msg, now)
	setCondition(&st.Conditions, v1.ConditionFailure, corev1.ConditionTrue, reason, msg, now)
}

func setCondition(conds *[]v1.SnapshotCondition, t v1.SnapshotConditionType, s corev1.ConditionStatus, reason, msg string, now time.Time) {
	v1.SetSnapshotCondition(conds, v1.SnapshotCondition{Type: t, Status: s, Reason: reason, Message: msg}, metav1.NewTime(now))
}

// errorAt is an error with msg, keeping old's time when old says the same.
func errorAt(old *v1.SnapshotError, msg string, now time.Time) *v1.SnapshotError {
	if old != nil && old.Message != nil && *old.Message == msg {
		return old
	}
	return &v1.SnapshotError{Time: ptr.To(metav1.NewTime(now)), Message: ptr.To(msg)}
}
