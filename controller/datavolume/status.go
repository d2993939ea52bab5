package datavolume

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/csi/claim"
)

// Observation is what the reconciler saw of a DataVolume's claim.
type Observation struct {
	// PVC is the DataVolume's claim; nil when it does not exist (yet).
	PVC *corev1.PersistentVolumeClaim
	// WaitForFirstConsumer is true when the claim's StorageClass binds late.
	WaitForFirstConsumer bool
	// Problem stops the DataVolume from progressing (Failed), with a reason and a message.
	Problem *Problem
	// Wait holds the import back until the tenant fixes it (a Secret it names is missing).
	Wait *Problem
}

// Problem is a reason and a message for a DataVolume that cannot go on.
type Problem struct {
	Reason, Message string
}

func (p *Problem) Error() string { return p.Reason + ": " + p.Message }

type kind int

const (
	kindBlank kind = iota
	kindImport
	kindUpload
	kindClone
	kindSnapshot
	kindRegistry
)

func sourceKind(dv *v1.DataVolume) kind {
	switch s := dv.Spec.Source; {
	case s.HTTP != nil:
		return kindImport
	case s.Registry != nil:
		return kindRegistry
	case s.Upload != nil:
		return kindUpload
	case s.PVC != nil:
		return kindClone
	case s.Snapshot != nil:
		return kindSnapshot
	}
	return kindBlank
}

// phases returns CDI's "scheduled" and "in progress" phases of a source kind.
func phases(k kind) [2]v1.DataVolumePhase {
	switch k {
	case kindImport, kindRegistry:
		return [2]v1.DataVolumePhase{v1.DataVolumeImportScheduled, v1.DataVolumeImportInProgress}
	case kindUpload:
		return [2]v1.DataVolumePhase{v1.DataVolumeUploadScheduled, v1.DataVolumeUploadReady}
	case kindClone, kindSnapshot:
		return [2]v1.DataVolumePhase{v1.DataVolumeCloneScheduled, v1.DataVolumeCloneInProgress}
	}
	return [2]v1.DataVolumePhase{v1.DataVolumePending, v1.DataVolumeImportInProgress}
}

// Status computes a DataVolume's status from what was observed. It is pure: same inputs,
// same status (condition times are kept from old unless the condition changed).
func Status(dv *v1.DataVolume, obs Observation, now time.Time) v1.DataVolumeStatus {
	st := v1.DataVolumeStatus{ClaimName: dv.Name, Progress: "N/A", RestartCount: dv.Status.RestartCount}
	k := sourceKind(dv)
	names := phases(k)
	bound := corev1.ConditionFalse
	boundReason, boundMsg := "Pending", "PVC "+dv.Name+" Pending"
	running := corev1.ConditionFalse
	runReason, runMsg := "Pending", ""
	ready := corev1.ConditionFalse

	report, reported := readReport(obs.PVC, &st)
	if obs.PVC != nil && obs.PVC.Status.Phase == corev1.ClaimBound {
		bound, boundReason, boundMsg = corev1.ConditionTrue, "Bound", "PVC "+dv.Name+" Bound"
	}

	switch {
	case obs.Problem != nil:
		st.Phase = v1.DataVolumeFailed
		runReason, runMsg = obs.Problem.Reason, obs.Problem.Message
	case obs.PVC == nil:
		st.Phase = v1.DataVolumePending
	case obs.PVC.Status.Phase == corev1.ClaimLost:
		st.Phase = v1.DataVolumeFailed
		boundReason, boundMsg = "ClaimLost", "PVC "+dv.Name+" lost its volume"
		runReason, runMsg = "ClaimLost", boundMsg
	case reported && report.Phase == claim.PhaseReady && bound != corev1.ConditionTrue:
		// Filled, but the claim is not bound to its volume yet: not usable, for a moment.
		st.Phase, st.Progress = names[0], "100.0%"
	case reported && report.Phase == claim.PhaseReady:
		st.Phase, st.Progress = v1.DataVolumeSucceeded, "100.0%"
		ready = corev1.ConditionTrue
		runReason = "Completed"
	case reported && report.Phase == claim.PhaseFailed && k == kindUpload:
		// An upload that failed can be sent again.
		st.Phase = v1.DataVolumeUploadReady
		runReason, runMsg = "UploadFailed", report.Message
	case reported && report.Phase == claim.PhaseFailed:
		st.Phase = v1.DataVolumeFailed
		runReason, runMsg = "Error", report.Message
	case reported && report.Phase == claim.PhasePopulating:
		st.Phase = names[1]
		running, runReason = corev1.ConditionTrue, ""
		runMsg = report.Message
	case reported && report.Phase == claim.PhasePending && k == kindRegistry:
		// The volume waits for the importer pod to send the image's disk.
		st.Phase = names[0]
		runReason, runMsg = importerWait(obs)
	case reported && report.Phase == claim.PhasePending:
		st.Phase = names[1] // only uploads wait for their content: UploadReady
		runReason, runMsg = "Pending", "waiting for the upload"
		if report.Message != "" {
			runMsg = report.Message
		}
	case obs.Wait != nil:
		st.Phase = names[0]
		runReason, runMsg = obs.Wait.Reason, obs.Wait.Message
	case bound == corev1.ConditionTrue && (k == kindBlank || k == kindSnapshot):
		// A driver without API access does not report; a bound blank volume is complete, and
		// so is one restored from a snapshot: the provisioner binds it only once restored.
		st.Phase, st.Progress = v1.DataVolumeSucceeded, "100.0%"
		ready, runReason = corev1.ConditionTrue, "Completed"
	case obs.WaitForFirstConsumer && obs.PVC.Annotations[annSelectedNode] == "":
		st.Phase = v1.DataVolumeWaitForFirstConsumer
		runMsg = "the import starts on the node of the first pod that uses the PVC"
	default:
		st.Phase = names[0]
	}
	if st.Phase == v1.DataVolumeSucceeded || st.Phase == v1.DataVolumeFailed {
		running = corev1.ConditionFalse
	}
	st.Conditions = []v1.DataVolumeCondition{
		condition(dv, v1.DataVolumeBound, bound, boundReason, boundMsg, now),
		condition(dv, v1.DataVolumeReady, ready, string(st.Phase), "", now),
		condition(dv, v1.DataVolumeRunning, running, runReason, runMsg, now),
	}
	return st
}

// importerWait is why a registry DataVolume's volume still waits for its disk.
func importerWait(obs Observation) (reason, msg string) {
	if obs.Wait != nil {
		return obs.Wait.Reason, obs.Wait.Message
	}
	return "Pending", "waiting for the importer pod"
}

// readReport reads what the driver reported on the claim; the restarts and progress it reports
// go into the status.
func readReport(pvc *corev1.PersistentVolumeClaim, st *v1.DataVolumeStatus) (claim.Content, bool) {
	if pvc == nil {
		return claim.Content{}, false
	}
	report, reported := claim.ParseReport(pvc.Annotations)
	if reported {
		st.RestartCount = int32(report.Restarts)
		if report.Progress != "" {
			st.Progress = report.Progress
		}
	}
	return report, reported
}

// condition keeps the old transition time when the status did not change.
func condition(dv *v1.DataVolume, t v1.DataVolumeConditionType, s corev1.ConditionStatus, reason, msg string, now time.Time) v1.DataVolumeCondition {
	c := v1.DataVolumeCondition{Type: t, Status: s, Reason: reason, Message: msg,
		LastProbeTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now)}
	for _, old := range dv.Status.Conditions {
		if old.Type == t {
			if old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
			if old.Status == s && old.Reason == reason && old.Message == msg {
				c.LastProbeTime = old.LastProbeTime
			}
		}
	}
	return c
}
