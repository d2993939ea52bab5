// Package vm reconciles VirtualMachines: it makes and deletes each VM's VMI according to the
// run strategy and the start/stop/restart requests, and reports the VM's status.
package vm

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Action is what the controller does to the VM's VMI.
type Action int

// The actions: leave the VMI as it is, create it, delete it.
const (
	None Action = iota
	CreateVMI
	DeleteVMI
)

func (a Action) String() string {
	return [...]string{"None", "CreateVMI", "DeleteVMI"}[a]
}

// Event is an event the decision wants recorded on the VM.
type Event struct {
	Type, Reason, Message string
}

// Decision is everything one reconcile does to a VM: at most one action on its VMI, and the
// VM's spec, annotations and failure record as they should be afterwards.
type Decision struct {
	Action Action
	// SetRunStrategy, when set, replaces the VM's run strategy (start on Halted, stop on Always).
	SetRunStrategy *v1.VirtualMachineRunStrategy
	// SetAnnotations and RemoveAnnotations edit the VM's request annotations.
	SetAnnotations    map[string]string
	RemoveAnnotations []string
	// StartFailure is the VM's crash-loop record after this decision.
	StartFailure *v1.VirtualMachineStartFailure
	// RequeueAfter asks to look again later (the end of a back-off).
	RequeueAfter time.Duration
	Event        *Event
}

// Backoff is the crash-loop back-off: the second failure in a row waits Base, each further one
// twice as long, up to Max.
type Backoff struct {
	Base, Max time.Duration
}

// DefaultBackoff is KubeVirt's: from 10 s up to 5 min.
func DefaultBackoff() Backoff { return Backoff{Base: 10 * time.Second, Max: 5 * time.Minute} }

// stableRun is how long a VMI must have run for its failure to start a new count.
const stableRun = time.Minute

// State is what a decision is made from.
type State struct {
	VM *v1.VirtualMachine
	// VMI is the VM's VMI, nil when there is none.
	VMI *v1.VirtualMachineInstance
	// VolumesReady is false while a DataVolume of the VM is still being filled.
	VolumesReady bool
	Now          time.Time
	Backoff      Backoff
}

// Decide is the run-strategy state machine. It is pure: a reconcile applies what it returns.
func Decide(s State) Decision {
	strategy := s.VM.EffectiveRunStrategy()
	d := Decision{StartFailure: s.trackFailure(strategy)}
	if s.request(&d, strategy) {
		return d
	}
	vmi := s.VMI
	switch strategy {
	case v1.RunStrategyHalted:
		if vmi != nil && vmi.DeletionTimestamp == nil {
			d.Action = DeleteVMI
		}
	case v1.RunStrategyAlways:
		s.keepRunning(&d, vmi != nil && vmi.Status.Phase.IsFinal())
	case v1.RunStrategyRerunOnFailure:
		s.keepRunning(&d, vmi != nil && vmi.Status.Phase == v1.Failed)
	case v1.RunStrategyOnce:
		if vmi != nil && vmi.Status.Phase.IsFinal() {
			d.SetRunStrategy = ptr.To(v1.RunStrategyHalted)
			return d
		}
		s.keepRunning(&d, false)
	case v1.RunStrategyManual:
		// Only requests start or stop a Manual VM.
	}
	return d
}

// keepRunning makes a VMI when there is none, and replaces one that ended when replace says so.
func (s State) keepRunning(d *Decision, replace bool) {
	switch {
	case s.VMI == nil:
		s.create(d, true)
	case s.VMI.DeletionTimestamp != nil:
	case replace:
		d.Action = DeleteVMI
	}
}

// create makes the VMI unless its volumes are not ready or, when backoff applies, the VM is in
// its crash-loop back-off.
func (s State) create(d *Decision, backoff bool) {
	if !s.VolumesReady {
		return
	}
	if backoff && d.StartFailure != nil && d.StartFailure.RetryAfterTimestamp != nil {
		if wait := d.StartFailure.RetryAfterTimestamp.Sub(s.Now); wait > 0 {
			d.RequeueAfter = wait
			return
		}
	}
	d.Action = CreateVMI
}

// trackFailure counts VMIs that failed in a row under the strategies that rerun them.
func (s State) trackFailure(strategy v1.VirtualMachineRunStrategy) *v1.VirtualMachineStartFailure {
	sf := s.VM.Status.StartFailure.DeepCopy()
	vmi := s.VMI
	if vmi == nil || strategy != v1.RunStrategyAlways && strategy != v1.RunStrategyRerunOnFailure {
		return sf
	}
	switch vmi.Status.Phase {
	case v1.Succeeded:
		return nil
	case v1.Failed:
		if sf != nil && sf.LastFailedVMIUID == vmi.UID {
			return sf
		}
		count := 1
		if sf != nil && !ranStable(vmi) {
			count = sf.ConsecutiveFailCount + 1
		}
		retry := metav1.NewTime(s.Now.Add(s.Backoff.delay(count)))
		return &v1.VirtualMachineStartFailure{ConsecutiveFailCount: count, LastFailedVMIUID: vmi.UID, RetryAfterTimestamp: &retry}
	}
	return sf
}

func (b Backoff) delay(count int) time.Duration {
	if count < 2 {
		return 0
	}
	d := b.Base
	for i := 2; i < count && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// ranStable says whether the VMI ran for stableRun before it ended.
func ranStable(vmi *v1.VirtualMachineInstance) bool {
	var running, ended *metav1.Time
	for i, t := range vmi.Status.PhaseTransitionTimestamps {
		switch t.Phase {
		case v1.Running:
			running = &vmi.Status.PhaseTransitionTimestamps[i].PhaseTransitionTimestamp
		case v1.Failed, v1.Succeeded:
			ended = &vmi.Status.PhaseTransitionTimestamps[i].PhaseTransitionTimestamp
		}
	}
	return running != nil && ended != nil && ended.Sub(running.Time) >= stableRun
}

// request carries out a start, stop or restart request; it says whether the request decided
// this reconcile.
func (s State) request(d *Decision, strategy v1.VirtualMachineRunStrategy) bool {
	ann := s.VM.Annotations
	if v, ok := ann[v1.AnnotationRestartRequested]; ok {
		return s.restart(d, strategy, v)
	}
	if _, ok := ann[v1.AnnotationStopRequested]; ok {
		return s.stop(d, strategy)
	}
	if _, ok := ann[v1.AnnotationStartRequested]; ok {
		return s.start(d, strategy)
	}
	return false
}

func (s State) restart(d *Decision, strategy v1.VirtualMachineRunStrategy, target string) bool {
	vmi := s.VMI
	done := func() { d.RemoveAnnotations = append(d.RemoveAnnotations, v1.AnnotationRestartRequested) }
	switch {
	case strategy == v1.RunStrategyHalted:
		done()
		d.Event = &Event{corev1.EventTypeWarning, "RestartRequestIgnored", "the VM is halted: start it instead"}
	case vmi == nil:
		s.create(d, false)
		if d.Action == CreateVMI {
			done()
		}
	case !looksLikeUID(target):
		// Pin the request to the VMI it is meant for, so it replaces that one exactly once.
		d.SetAnnotations = map[string]string{v1.AnnotationRestartRequested: string(vmi.UID)}
	case string(vmi.UID) != target:
		done()
		return false
	case vmi.DeletionTimestamp == nil:
		d.Action = DeleteVMI
		d.Event = &Event{corev1.EventTypeNormal, "Restarting", "replacing VMI " + string(vmi.UID)}
	}
	return true
}

func (s State) stop(d *Decision, strategy v1.VirtualMachineRunStrategy) bool {
	vmi := s.VMI
	switch strategy {
	case v1.RunStrategyAlways, v1.RunStrategyRerunOnFailure, v1.RunStrategyOnce:
		d.SetRunStrategy = ptr.To(v1.RunStrategyHalted)
		d.RemoveAnnotations = []string{v1.AnnotationStopRequested}
	default:
		switch {
		case vmi == nil:
			d.RemoveAnnotations = []string{v1.AnnotationStopRequested}
		case vmi.DeletionTimestamp == nil:
			d.Action = DeleteVMI
		}
	}
	return true
}

func (s State) start(d *Decision, strategy v1.VirtualMachineRunStrategy) bool {
	vmi := s.VMI
	done := func() { d.RemoveAnnotations = []string{v1.AnnotationStartRequested} }
	switch strategy {
	case v1.RunStrategyHalted:
		d.SetRunStrategy = ptr.To(v1.RunStrategyAlways)
		done()
	case v1.RunStrategyManual:
		switch {
		case vmi == nil:
			s.create(d, false)
			if d.Action == CreateVMI {
				done()
			}
		case vmi.DeletionTimestamp != nil:
		case vmi.Status.Phase.IsFinal():
			d.Action = DeleteVMI
		default:
			done()
		}
	case v1.RunStrategyRerunOnFailure:
		if vmi != nil && vmi.Status.Phase == v1.Succeeded && vmi.DeletionTimestamp == nil {
			d.Action = DeleteVMI
			return true
		}
		done()
		return false
	default:
		done()
		d.Event = &Event{corev1.EventTypeWarning, "StartRequestIgnored", "runStrategy " + string(strategy) + " already runs the VM"}
		return false
	}
	return true
}

func looksLikeUID(s string) bool {
	return len(s) == 36 && strings.Count(s, "-") == 4
}
