// Package vmirs reconciles VirtualMachineInstanceReplicaSets: it keeps spec.replicas VMIs of
// the template running, replacing those that end.
package vmirs

import (
	"errors"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Plan is what one reconcile does: VMIs to make and VMIs to delete.
type Plan struct {
	Create int
	Delete []*v1.VirtualMachineInstance
}

// PlanReplicas compares the wanted count with the replica set's VMIs. Ended VMIs are deleted
// (and so replaced); surplus ones are deleted least useful first: not running, not ready, newest.
// It is pure.
func PlanReplicas(want int, vmis []v1.VirtualMachineInstance) Plan {
	var plan Plan
	var active []*v1.VirtualMachineInstance
	for i := range vmis {
		vmi := &vmis[i]
		switch {
		case vmi.DeletionTimestamp != nil:
		case vmi.Status.Phase.IsFinal():
			plan.Delete = append(plan.Delete, vmi)
		default:
			active = append(active, vmi)
		}
	}
	if diff := want - len(active); diff > 0 {
		plan.Create = diff
		return plan
	}
	sort.SliceStable(active, func(i, j int) bool { return lessUseful(active[i], active[j]) })
	plan.Delete = append(plan.Delete, active[:len(active)-want]...)
	return plan
}

func lessUseful(a, b *v1.VirtualMachineInstance) bool {
	if ra, rb := a.Status.Phase == v1.Running, b.Status.Phase == v1.Running; ra != rb {
		return !ra
	}
	if ra, rb := isReady(a), isReady(b); ra != rb {
		return !ra
	}
	return b.CreationTimestamp.Before(&a.CreationTimestamp)
}

func isReady(vmi *v1.VirtualMachineInstance) bool {
	if vmi.Status.Phase != v1.Running {
		return false
	}
	for _, c := range vmi.Status.Conditions {
		if c.Type == v1.VMIReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ComputeStatus counts the replica set's VMIs. It is pure.
func ComputeStatus(rs *v1.VirtualMachineInstanceReplicaSet, vmis []v1.VirtualMachineInstance, selector string, failure *Failure, now metav1.Time) v1.VirtualMachineInstanceReplicaSetStatus {
	st := *rs.Status.DeepCopy()
	st.Replicas, st.ReadyReplicas = 0, 0
	for i := range vmis {
		vmi := &vmis[i]
		if vmi.DeletionTimestamp != nil || vmi.Status.Phase.IsFinal() {
			continue
		}
		st.Replicas++
		if isReady(vmi) {
			st.ReadyReplicas++
		}
	}
	st.LabelSelector = selector
	st.ObservedGeneration = rs.Generation
	setCondition(&st, v1.ReplicaSetPaused, rs.Spec.Paused, "Paused", "the replica set is paused", now)
	if failure != nil {
		setCondition(&st, v1.ReplicaSetReplicaFailure, true, failure.Reason, failure.Message, now)
	} else {
		setCondition(&st, v1.ReplicaSetReplicaFailure, false, "", "", now)
	}
	return st
}

// Failure is why VMIs could not be made or deleted.
type Failure struct {
	Reason, Message string
}

// setCondition stores a true condition and removes a false one.
func setCondition(st *v1.VirtualMachineInstanceReplicaSetStatus, t v1.VirtualMachineInstanceReplicaSetConditionType, on bool, reason, message string, now metav1.Time) {
	for i, c := range st.Conditions {
		if c.Type != t {
			continue
		}
		if !on {
			st.Conditions = append(st.Conditions[:i], st.Conditions[i+1:]...)
			return
		}
		st.Conditions[i].Reason, st.Conditions[i].Message = reason, message
		return
	}
	if on {
		st.Conditions = append(st.Conditions, v1.VirtualMachineInstanceReplicaSetCondition{
			Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastTransitionTime: now})
	}
}

// createFailureMessage is a refused VMI create's error without the name the API server
// generated for the VMI: every try gets a new name, and a message naming it would change the
// status on every try, each status write waking the replica set up for another try at once.
func createFailureMessage(err error) string {
	msg := err.Error()
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		if d := st.Status().Details; d != nil && d.Name != "" {
			msg = strings.ReplaceAll(msg, " "+strconv.Quote(d.Name), "")
		}
	}
	return msg
}
