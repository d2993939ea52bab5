package vmi

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Reasons a VMI gives in its status, conditions and events.
const (
	ReasonLauncherPodDeleted = "LauncherPodDeleted"
	ReasonGuestShutdown      = "GuestShutdown"
	ReasonGuestCrashed       = "GuestCrashed"
	ReasonSetupFailed        = "SetupFailed"
	ReasonLauncherFailed     = "LauncherFailed"
	ReasonPodFailed          = "PodFailed"
	ReasonPodNotExists       = "PodNotExists"
	ReasonPodNotReady        = "PodNotReady"
	ReasonUnschedulable      = "Unschedulable"
	ReasonGuestRunning       = "GuestRunning"
)

// msgPodDeleted explains a VMI whose pod went away under it; the guest is killed with the pod.
const msgPodDeleted = "the launcher pod was deleted while the VMI ran"

// Problem says why the controller cannot make a VMI's pod (a missing PVC or Secret, ...).
type Problem struct {
	Reason  string
	Message string
}

// Observation is what the controller saw of a VMI's launcher pod.
type Observation struct {
	// PodName is the launcher pod's name (status.launcherPod), empty before it is chosen.
	PodName string
	// Pod is the launcher pod, nil when it does not exist.
	Pod *corev1.Pod
	// Problem is why the pod cannot be made; nil when nothing is wrong.
	Problem *Problem
}

// phaseRank orders the phases a VMI moves through; it never moves to a lower rank.
func phaseRank(p v1.VirtualMachineInstancePhase) int {
	switch p {
	case v1.Scheduling:
		return 1
	case v1.Scheduled:
		return 2
	case v1.Running:
		return 3
	case v1.Succeeded, v1.Failed:
		return 4
	}
	return 0
}

// outcome is a phase with why it was reached.
type outcome struct {
	phase   v1.VirtualMachineInstancePhase
	reason  string
	message string
}

// ComputeStatus is the VMI's status given what was observed. It is pure; the VMI's phase only
// moves forward and a final phase never changes.
func ComputeStatus(vmi *v1.VirtualMachineInstance, obs Observation, now metav1.Time) v1.VirtualMachineInstanceStatus {
	old := vmi.Status
	st := *old.DeepCopy()
	if old.Phase == "" {
		st.Phase = v1.Pending
	}
	if obs.PodName != "" {
		st.LauncherPod = obs.PodName
	}
	setCondition(&st, obs.problemCondition(), now)
	if old.Phase.IsFinal() {
		setCondition(&st, readyCondition(false, old.Reason, old.Message), now)
		return st
	}
	out := podOutcome(old.Phase, obs.Pod)
	if phaseRank(out.phase) > phaseRank(st.Phase) || out.phase.IsFinal() {
		st.Phase = out.phase
	}
	if st.Phase.IsFinal() {
		st.Reason, st.Message = out.reason, out.message
	}
	if st.Phase != old.Phase {
		st.PhaseTransitionTimestamps = append(st.PhaseTransitionTimestamps,
			v1.VirtualMachineInstancePhaseTransitionTimestamp{Phase: st.Phase, PhaseTransitionTimestamp: now})
	}
	if pod := obs.Pod; pod != nil {
		if pod.Spec.NodeName != "" {
			st.NodeName = pod.Spec.NodeName
		}
		setInterfaces(&st, vmi, pod)
		st.MemoryOverhead = memoryOverhead(vmi, pod)
	}
	ready := st.Phase == v1.Running && out.phase == v1.Running
	reason, message := ReasonGuestRunning, ""
	if !ready {
		reason, message = notReadyReason(st.Phase, out, obs.Pod)
	}
	setCondition(&st, readyCondition(ready, reason, message), now)
	return st
}

// memoryOverhead is what the launcher pod's containers request besides the guest's memory; nil
// when the VMI does not say how much memory its guest has.
func memoryOverhead(vmi *v1.VirtualMachineInstance, pod *corev1.Pod) *resource.Quantity {
	guest, ok := vmi.Spec.Domain.GuestMemory()
	if !ok {
		return nil
	}
	var total resource.Quantity
	for _, c := range pod.Spec.Containers {
		if m, ok := c.Resources.Requests[corev1.ResourceMemory]; ok {
			total.Add(m)
		}
	}
	total.Sub(guest)
	if total.Sign() < 0 {
		return nil // the guest's memory is overcommitted
	}
	return resource.NewQuantity(total.Value(), resource.BinarySI)
}

// podOutcome reads the VMI's phase off its launcher pod.
func podOutcome(current v1.VirtualMachineInstancePhase, pod *corev1.Pod) outcome {
	if pod == nil {
		if phaseRank(current) > phaseRank(v1.Pending) {
			return outcome{v1.Failed, ReasonLauncherPodDeleted, msgPodDeleted}
		}
		return outcome{phase: v1.Pending}
	}
	compute := containerStatus(pod, launcherpod.ComputeContainer)
	if compute != nil && compute.State.Terminated != nil {
		return exitOutcome(compute.State.Terminated)
	}
	if pod.DeletionTimestamp != nil {
		return outcome{v1.Failed, ReasonLauncherPodDeleted, msgPodDeleted}
	}
	switch pod.Status.Phase {
	case corev1.PodFailed:
		if out, ok := initOutcome(pod); ok {
			return out
		}
		reason := pod.Status.Reason
		if reason == "" {
			reason = ReasonPodFailed
		}
		return outcome{v1.Failed, reason, pod.Status.Message}
	case corev1.PodSucceeded:
		return outcome{v1.Succeeded, ReasonGuestShutdown, ""}
	}
	if podReady(pod) {
		return outcome{phase: v1.Running}
	}
	if pod.Spec.NodeName != "" {
		return outcome{phase: v1.Scheduled}
	}
	return outcome{phase: v1.Scheduling}
}

// initOutcome says why a pod failed in an init container (the hostdisk-owner refusing an
// image): the container's name and its termination message, which names the path and why.
func initOutcome(pod *corev1.Pod) (outcome, bool) {
	for _, cs := range pod.Status.InitContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			msg := firstNonEmpty(t.Message, fmt.Sprintf("exited with code %d", t.ExitCode))
			return outcome{v1.Failed, ReasonSetupFailed, fmt.Sprintf("container %s: %s", cs.Name, msg)}, true
		}
	}
	return outcome{}, false
}

// exitOutcome maps the launcher's exit code (launcherpod.Exit*) to a final phase.
func exitOutcome(t *corev1.ContainerStateTerminated) outcome {
	msg := t.Message
	switch {
	case t.ExitCode == launcherpod.ExitGuestShutdown:
		return outcome{v1.Succeeded, ReasonGuestShutdown, msg}
	case t.Reason == "OOMKilled":
		return outcome{v1.Failed, "OOMKilled", firstNonEmpty(msg, "the launcher was killed for using more memory than its limit")}
	case t.ExitCode == launcherpod.ExitGuestCrashed:
		return outcome{v1.Failed, ReasonGuestCrashed, msg}
	case t.ExitCode == launcherpod.ExitSetupFailed:
		return outcome{v1.Failed, ReasonSetupFailed, msg}
	}
	return outcome{v1.Failed, ReasonLauncherFailed, firstNonEmpty(msg, fmt.Sprintf("the launcher exited with code %d", t.ExitCode))}
}

// notReadyReason explains a VMI that is not ready, most specific cause first.
func notReadyReason(phase v1.VirtualMachineInstancePhase, out outcome, pod *corev1.Pod) (string, string) {
	if phase.IsFinal() {
		return out.reason, out.message
	}
	if pod == nil {
		return ReasonPodNotExists, "the launcher pod does not exist yet"
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason != "" {
			return c.Reason, c.Message
		}
	}
	all := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range all {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" && w.Reason != "ContainerCreating" {
			return w.Reason, fmt.Sprintf("container %s: %s", cs.Name, w.Message)
		}
	}
	return ReasonPodNotReady, "the launcher has not reported the guest running"
}

func (o Observation) problemCondition() v1.VirtualMachineInstanceCondition {
	if o.Problem == nil {
		return v1.VirtualMachineInstanceCondition{Type: v1.VMISynchronized, Status: corev1.ConditionTrue}
	}
	return v1.VirtualMachineInstanceCondition{Type: v1.VMISynchronized, Status: corev1.ConditionFalse,
		Reason: o.Problem.Reason, Message: o.Problem.Message}
}

func readyCondition(ready bool, reason, message string) v1.VirtualMachineInstanceCondition {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return v1.VirtualMachineInstanceCondition{Type: v1.VMIReady, Status: status, Reason: reason, Message: message}
}

// setInterfaces reports the pod's addresses as the first interface's, keeping what others (the
// node agent) wrote of it, such as the guest MAC.
func setInterfaces(st *v1.VirtualMachineInstanceStatus, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) {
	if pod.Status.PodIP == "" {
		return
	}
	var first v1.VirtualMachineInstanceNetworkInterface
	if len(st.Interfaces) > 0 {
		first = st.Interfaces[0]
	}
	first.Name = vmi.InterfaceName(0)
	first.IP = pod.Status.PodIP
	first.IPs = nil
	for _, ip := range pod.Status.PodIPs {
		first.IPs = append(first.IPs, ip.IP)
	}
	if len(first.IPs) == 0 {
		first.IPs = []string{pod.Status.PodIP}
	}
	if len(st.Interfaces) == 0 {
		st.Interfaces = []v1.VirtualMachineInstanceNetworkInterface{first}
		return
	}
	st.Interfaces[0] = first
}

// setCondition puts c into the status (see SetCondition); a Synchronized=True condition is
// removed rather than stored: it is the normal state.
func setCondition(st *v1.VirtualMachineInstanceStatus, c v1.VirtualMachineInstanceCondition, now metav1.Time) {
	if c.Type == v1.VMISynchronized && c.Status == corev1.ConditionTrue {
		st.RemoveCondition(c.Type)
		return
	}
	st.SetCondition(c, now)
}

// podReady says whether the pod is Ready: its containers run and its readiness gate (the
// domain runs) is true.
func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == name {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// DiskGrowths are the entries of after's volumeStatus whose size is larger than in before's
// (a disk listed for the first time grew from what the VMI started with): one DiskResized event
// each.
func DiskGrowths(before, after []v1.VolumeStatus) []v1.VolumeStatus {
	was := make(map[string]int64, len(before))
	for _, vs := range before {
		was[vs.Name] = vs.Size
	}
	var grew []v1.VolumeStatus
	for _, vs := range after {
		if vs.Size > was[vs.Name] {
			grew = append(grew, vs)
		}
	}
	return grew
}
