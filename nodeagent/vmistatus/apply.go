// Package vmistatus reports what the launchers on this node say to their VMIs' status: the
// Running phase as soon as the domain runs, the Paused and AgentConnected conditions, the
// guest's OS as its agent reports it, the guest's MAC and leased IP on its first interface, and
// the size the guest sees of each disk that grew. The controller owns the rest of the status (Pending to
// Scheduled, the final phases, Ready and Synchronized) and keeps what is written here.
package vmistatus

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Condition reasons written by the node agent.
const (
	// ReasonPausedByUser is the Paused condition's reason (KubeVirt's PausedByUser).
	ReasonPausedByUser = "PausedByUser"
)

// launcherPhases whose domain exists and runs or is paused.
var domainUp = []string{launcherpod.PhaseRunning, launcherpod.PhasePaused}

// Apply writes into vmi's status what the launcher of pod reported in st and says whether
// anything changed. It only moves a Pending, Scheduling or Scheduled VMI to Running, never
// touches a VMI in a final phase, and ignores a pod that is not the VMI's launcher.
func Apply(vmi *v1.VirtualMachineInstance, pod *corev1.Pod, st launcherpod.Status, now metav1.Time) bool {
	if vmi.Status.Phase.IsFinal() || vmi.Status.LauncherPod != pod.Name || !metav1.IsControlledBy(pod, vmi) {
		return false
	}
	before := vmi.Status.DeepCopy()
	s := &vmi.Status
	up := slices.Contains(domainUp, st.Phase)
	if up && beforeRunning(s.Phase) {
		s.Phase = v1.Running
		s.PhaseTransitionTimestamps = append(s.PhaseTransitionTimestamps,
			v1.VirtualMachineInstancePhaseTransitionTimestamp{Phase: v1.Running, PhaseTransitionTimestamp: now})
		if s.NodeName == "" {
			s.NodeName = pod.Spec.NodeName
		}
	}
	if st.Phase == launcherpod.PhasePaused {
		s.SetCondition(v1.VirtualMachineInstanceCondition{Type: v1.VMIPaused, Status: corev1.ConditionTrue,
			Reason: ReasonPausedByUser, Message: "the guest's vCPUs are paused"}, now)
	} else if st.Phase != "" {
		s.RemoveCondition(v1.VMIPaused)
	}
	if up && st.GuestMAC != "" {
		setGuestAddress(s, vmi, st)
	}
	if st.AgentConnected && up {
		s.SetCondition(v1.VirtualMachineInstanceCondition{Type: v1.VMIAgentConnected, Status: corev1.ConditionTrue}, now)
	} else if st.Phase != "" {
		s.RemoveCondition(v1.VMIAgentConnected)
	}
	if st.GuestOS != nil {
		s.GuestOSInfo = v1.GuestOSInfoFrom(st.GuestOS)
	}
	s.VolumeStatus = VolumeStatus(vmi, s.VolumeStatus, st.DiskTargets, st.DiskSizes)
	return !equality.Semantic.DeepEqual(before, s)
}

// VolumeStatus is the VMI's status.volumeStatus from what the launcher reported: each volume
// with a disk in the guest, in the order of spec.volumes, with the guest's device name
// (targets) and, for a disk that grew, the bytes the guest now sees (sizes). An entry of
// current keeps what the report does not say. A name that is none of the VMI's volumes is left
// out (the launcher's pod could write any).
func VolumeStatus(vmi *v1.VirtualMachineInstance, current []v1.VolumeStatus, targets map[string]string, sizes map[string]int64) []v1.VolumeStatus {
	if len(sizes) == 0 && len(targets) == 0 {
		return current
	}
	var out []v1.VolumeStatus
	for _, vol := range vmi.Spec.Volumes {
		vs := v1.VolumeStatus{Name: vol.Name}
		i := slices.IndexFunc(current, func(c v1.VolumeStatus) bool { return c.Name == vol.Name })
		if i >= 0 {
			vs = current[i]
		}
		if t, ok := targets[vol.Name]; ok {
			vs.Target = t
		}
		if size, ok := sizes[vol.Name]; ok {
			vs.Size = size
		}
		if i >= 0 || vs.Target != "" || vs.Size != 0 {
			out = append(out, vs)
		}
	}
	return out
}

func beforeRunning(p v1.VirtualMachineInstancePhase) bool {
	return p == "" || p == v1.Pending || p == v1.Scheduling || p == v1.Scheduled
}

// setGuestAddress puts the guest's MAC and leased IP on the VMI's first interface.
func setGuestAddress(s *v1.VirtualMachineInstanceStatus, vmi *v1.VirtualMachineInstance, st launcherpod.Status) {
	if len(s.Interfaces) == 0 {
		s.Interfaces = []v1.VirtualMachineInstanceNetworkInterface{{Name: vmi.InterfaceName(0)}}
	}
	first := &s.Interfaces[0]
	first.MAC = st.GuestMAC
	// The pod's addresses, which the controller reports, are the ones to reach the VM by: the
	// same as the lease on a bridge, the pod's own behind masquerade. The lease fills in until
	// the controller has them.
	if first.IP == "" && st.GuestIP != "" {
		first.IP, first.IPs = st.GuestIP, []string{st.GuestIP}
	}
}
