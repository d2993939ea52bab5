package vm

import (
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Problem is why the controller could not carry out a decision (the Failure condition).
type Problem struct {
	Reason, Message string
}

// Volumes sums up the VM's DataVolumes.
type Volumes struct {
	// Ready is true when every DataVolume can be used (Succeeded, or waiting for its consumer).
	Ready bool
	// Failed names a DataVolume whose import failed, or that could not be made; empty when
	// none did.
	Failed string
	// Refused is why a DataVolume could not be made; nil when none was refused.
	Refused *Problem
}

// ComputeStatus is the VM's status after a decision. It is pure.
func ComputeStatus(s State, vols Volumes, d Decision, failure *Problem) v1.VirtualMachineStatus {
	vm, vmi := s.VM, s.VMI
	now := metav1.NewTime(s.Now)
	st := *vm.Status.DeepCopy()
	st.RunStrategy = vm.EffectiveRunStrategy()
	st.ObservedGeneration = vm.Generation
	st.StartFailure = d.StartFailure
	st.Created = vmi != nil
	st.Ready = vmi != nil && vmi.Status.Phase == v1.Running && vmiCondition(vmi, v1.VMIReady).Status == corev1.ConditionTrue
	st.PrintableStatus = printableStatus(s, vols, d)
	ready := v1.VirtualMachineCondition{Type: v1.VMReady, Status: corev1.ConditionFalse, Reason: "VMINotExists", Message: "the VM has no VMI"}
	if vmi != nil {
		c := vmiCondition(vmi, v1.VMIReady)
		ready = v1.VirtualMachineCondition{Type: v1.VMReady, Status: c.Status, Reason: c.Reason, Message: c.Message}
		if ready.Status == "" {
			ready.Status, ready.Reason = corev1.ConditionFalse, "VMINotReady"
		}
	}
	setCondition(&st, ready, now)
	if vmi != nil && vmi.DeletionTimestamp == nil && !vmi.Status.Phase.IsFinal() && !apiequality.Semantic.DeepEqual(vm.Spec.Template.Spec, vmi.Spec) {
		setCondition(&st, v1.VirtualMachineCondition{Type: v1.VMRestartRequired, Status: corev1.ConditionTrue, Reason: "TemplateChanged",
			Message: "spec.template changed since the VMI was made: restart the VM to apply it"}, now)
	} else {
		removeCondition(&st, v1.VMRestartRequired)
	}
	if failure != nil {
		setCondition(&st, v1.VirtualMachineCondition{Type: v1.VMFailure, Status: corev1.ConditionTrue, Reason: failure.Reason, Message: failure.Message}, now)
	} else {
		removeCondition(&st, v1.VMFailure)
	}
	return st
}

// printableStatus is the one word `kubectl get vm` shows, KubeVirt's vocabulary.
func printableStatus(s State, vols Volumes, d Decision) v1.VirtualMachinePrintableStatus {
	vm, vmi := s.VM, s.VMI
	backingOff := d.StartFailure != nil && d.StartFailure.RetryAfterTimestamp != nil && d.StartFailure.RetryAfterTimestamp.After(s.Now)
	switch {
	case vm.DeletionTimestamp != nil:
		return v1.PrintableTerminating
	case vols.Failed != "":
		return v1.PrintableDataVolumeError
	case vmi == nil && backingOff:
		return v1.PrintableCrashLoopBackOff
	case vmi == nil && !vols.Ready && wantsRunning(vm):
		return v1.PrintableProvisioning
	case vmi == nil && (d.Action == CreateVMI || wantsRunning(vm)):
		return v1.PrintableStarting
	case vmi == nil:
		return v1.PrintableStopped
	case vmi.DeletionTimestamp != nil:
		return v1.PrintableStopping
	case vmi.Status.Phase.IsFinal() && backingOff:
		return v1.PrintableCrashLoopBackOff
	case vmi.Status.Phase.IsFinal():
		return v1.PrintableStopped
	case vmi.Status.Phase == v1.Running:
		if vmiCondition(vmi, v1.VMIPaused).Status == corev1.ConditionTrue {
			return v1.PrintablePaused
		}
		return v1.PrintableRunning
	}
	return startingStatus(vmi)
}

// startingStatus names what holds up a VMI that is not running yet.
func startingStatus(vmi *v1.VirtualMachineInstance) v1.VirtualMachinePrintableStatus {
	if c := vmiCondition(vmi, v1.VMISynchronized); c.Status == corev1.ConditionFalse {
		switch c.Reason {
		case "PVCNotFound":
			return v1.PrintableErrorPvcNotFound
		case "DataVolumeNotReady":
			return v1.PrintableProvisioning
		case "DataVolumeError":
			return v1.PrintableDataVolumeError
		}
	}
	switch vmiCondition(vmi, v1.VMIReady).Reason {
	case "Unschedulable":
		return v1.PrintableErrorUnschedulable
	case "ErrImagePull":
		return v1.PrintableErrImagePull
	case "ImagePullBackOff":
		return v1.PrintableImagePullBackOff
	}
	return v1.PrintableStarting
}

// wantsRunning says whether the VM's strategy keeps a VMI without being asked.
func wantsRunning(vm *v1.VirtualMachine) bool {
	switch vm.EffectiveRunStrategy() {
	case v1.RunStrategyAlways, v1.RunStrategyRerunOnFailure, v1.RunStrategyOnce:
		return true
	}
	_, start := vm.Annotations[v1.AnnotationStartRequested]
	return start
}

func vmiCondition(vmi *v1.VirtualMachineInstance, t v1.VirtualMachineInstanceConditionType) v1.VirtualMachineInstanceCondition {
	for _, c := range vmi.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return v1.VirtualMachineInstanceCondition{}
}

func setCondition(st *v1.VirtualMachineStatus, c v1.VirtualMachineCondition, now metav1.Time) {
	for i, old := range st.Conditions {
		if old.Type != c.Type {
			continue
		}
		c.LastTransitionTime = old.LastTransitionTime
		if old.Status != c.Status {
			c.LastTransitionTime = now
		}
		st.Conditions[i] = c
		return
	}
	c.LastTransitionTime = now
	st.Conditions = append(st.Conditions, c)
}

func removeCondition(st *v1.VirtualMachineStatus, t v1.VirtualMachineConditionType) {
	for i, c := range st.Conditions {
		if c.Type == t {
			st.Conditions = append(st.Conditions[:i], st.Conditions[i+1:]...)
			return
		}
	}
}
