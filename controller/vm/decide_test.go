package vm

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

const vmiUID = "11111111-2222-3333-4444-555555555555"

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func vmWith(strategy v1.VirtualMachineRunStrategy, ann map[string]string) *v1.VirtualMachine {
	vm := &v1.VirtualMachine{}
	vm.Name, vm.Annotations = "vm", ann
	if strategy != "" {
		vm.Spec.RunStrategy = &strategy
	}
	return vm
}

func vmiIn(phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	vmi := &v1.VirtualMachineInstance{}
	vmi.UID = vmiUID
	vmi.Status.Phase = phase
	return vmi
}

func deletingVMI() *v1.VirtualMachineInstance {
	vmi := vmiIn(v1.Running)
	vmi.DeletionTimestamp = &metav1.Time{Time: t0}
	return vmi
}

func req(k string) map[string]string { return map[string]string{k: "now"} }

// TestRunStrategyTransitions covers every run strategy against every state of the VMI, and
// each request against each strategy.
func TestRunStrategyTransitions(t *testing.T) {
	halted := v1.RunStrategyHalted
	always := v1.RunStrategyAlways
	tests := []struct {
		name         string
		strategy     v1.VirtualMachineRunStrategy
		ann          map[string]string
		vmi          *v1.VirtualMachineInstance
		notReady     bool
		wantAction   Action
		wantStrategy *v1.VirtualMachineRunStrategy
		wantRemoved  []string
		wantSet      map[string]string
	}{
		// Always
		{name: "always, no vmi: create", strategy: always, wantAction: CreateVMI},
		{name: "always, volumes not ready: wait", strategy: always, notReady: true, wantAction: None},
		{name: "always, running: nothing", strategy: always, vmi: vmiIn(v1.Running), wantAction: None},
		{name: "always, pending: nothing", strategy: always, vmi: vmiIn(v1.Scheduling), wantAction: None},
		{name: "always, succeeded: replace", strategy: always, vmi: vmiIn(v1.Succeeded), wantAction: DeleteVMI},
		{name: "always, failed: replace", strategy: always, vmi: vmiIn(v1.Failed), wantAction: DeleteVMI},
		{name: "always, deleting: wait", strategy: always, vmi: deletingVMI(), wantAction: None},
		// RerunOnFailure
		{name: "rerun, no vmi: create", strategy: v1.RunStrategyRerunOnFailure, wantAction: CreateVMI},
		{name: "rerun, running: nothing", strategy: v1.RunStrategyRerunOnFailure, vmi: vmiIn(v1.Running), wantAction: None},
		{name: "rerun, failed: replace", strategy: v1.RunStrategyRerunOnFailure, vmi: vmiIn(v1.Failed), wantAction: DeleteVMI},
		{name: "rerun, succeeded: stays stopped", strategy: v1.RunStrategyRerunOnFailure, vmi: vmiIn(v1.Succeeded), wantAction: None},
		// Once
		{name: "once, no vmi: create", strategy: v1.RunStrategyOnce, wantAction: CreateVMI},
		{name: "once, running: nothing", strategy: v1.RunStrategyOnce, vmi: vmiIn(v1.Running), wantAction: None},
		{name: "once, succeeded: becomes halted", strategy: v1.RunStrategyOnce, vmi: vmiIn(v1.Succeeded), wantStrategy: &halted},
		{name: "once, failed: becomes halted", strategy: v1.RunStrategyOnce, vmi: vmiIn(v1.Failed), wantStrategy: &halted},
		// Manual
		{name: "manual, no vmi: nothing", strategy: v1.RunStrategyManual, wantAction: None},
		{name: "manual, failed: stays", strategy: v1.RunStrategyManual, vmi: vmiIn(v1.Failed), wantAction: None},
		{name: "manual, running: nothing", strategy: v1.RunStrategyManual, vmi: vmiIn(v1.Running), wantAction: None},
		// Halted (and nothing set at all)
		{name: "halted, no vmi: nothing", strategy: halted, wantAction: None},
		{name: "halted, running: stop", strategy: halted, vmi: vmiIn(v1.Running), wantAction: DeleteVMI},
		{name: "halted, succeeded: delete", strategy: halted, vmi: vmiIn(v1.Succeeded), wantAction: DeleteVMI},
		{name: "halted, deleting: wait", strategy: halted, vmi: deletingVMI(), wantAction: None},
		{name: "no strategy is halted", strategy: "", vmi: vmiIn(v1.Running), wantAction: DeleteVMI},
		// start requests
		{name: "start on halted: becomes always", strategy: halted, ann: req(v1.AnnotationStartRequested), wantStrategy: &always, wantRemoved: []string{v1.AnnotationStartRequested}},
		{name: "start on manual, no vmi: create", strategy: v1.RunStrategyManual, ann: req(v1.AnnotationStartRequested), wantAction: CreateVMI, wantRemoved: []string{v1.AnnotationStartRequested}},
		{name: "start on manual, volumes not ready: wait", strategy: v1.RunStrategyManual, ann: req(v1.AnnotationStartRequested), notReady: true, wantAction: None},
		{name: "start on manual, final vmi: delete it first", strategy: v1.RunStrategyManual, ann: req(v1.AnnotationStartRequested), vmi: vmiIn(v1.Succeeded), wantAction: DeleteVMI},
		{name: "start on manual, running: done", strategy: v1.RunStrategyManual, ann: req(v1.AnnotationStartRequested), vmi: vmiIn(v1.Running), wantRemoved: []string{v1.AnnotationStartRequested}},
		{name: "start on rerun, succeeded: replace", strategy: v1.RunStrategyRerunOnFailure, ann: req(v1.AnnotationStartRequested), vmi: vmiIn(v1.Succeeded), wantAction: DeleteVMI},
		{name: "start on rerun, no vmi: create", strategy: v1.RunStrategyRerunOnFailure, ann: req(v1.AnnotationStartRequested), wantAction: CreateVMI, wantRemoved: []string{v1.AnnotationStartRequested}},
		{name: "start on always: ignored", strategy: always, ann: req(v1.AnnotationStartRequested), vmi: vmiIn(v1.Running), wantRemoved: []string{v1.AnnotationStartRequested}},
		// stop requests
		{name: "stop on always: becomes halted", strategy: always, ann: req(v1.AnnotationStopRequested), vmi: vmiIn(v1.Running), wantStrategy: &halted, wantRemoved: []string{v1.AnnotationStopRequested}},
		{name: "stop on rerun: becomes halted", strategy: v1.RunStrategyRerunOnFailure, ann: req(v1.AnnotationStopRequested), vmi: vmiIn(v1.Running), wantStrategy: &halted, wantRemoved: []string{v1.AnnotationStopRequested}},
		{name: "stop on once: becomes halted", strategy: v1.RunStrategyOnce, ann: req(v1.AnnotationStopRequested), vmi: vmiIn(v1.Running), wantStrategy: &halted, wantRemoved: []string{v1.AnnotationStopRequested}},
		{name: "stop on manual, running: delete", strategy: v1.RunStrategyManual, ann: req(v1.AnnotationStopRequested), vmi: vmiIn(v1.Running), wantAction: DeleteVMI},
		{name: "stop on manual, deleting: wait", strategy: v1.RunStrategyManual, ann: req(v1.AnnotationStopRequested), vmi: deletingVMI(), wantAction: None},
		{name: "stop on manual, gone: done", strategy: v1.RunStrategyManual, ann: req(v1.AnnotationStopRequested), wantRemoved: []string{v1.AnnotationStopRequested}},
		{name: "stop on halted, gone: done", strategy: halted, ann: req(v1.AnnotationStopRequested), wantRemoved: []string{v1.AnnotationStopRequested}},
		// restart requests
		{name: "restart pins the vmi uid", strategy: always, ann: req(v1.AnnotationRestartRequested), vmi: vmiIn(v1.Running), wantSet: map[string]string{v1.AnnotationRestartRequested: vmiUID}},
		{name: "restart deletes the pinned vmi", strategy: always, ann: map[string]string{v1.AnnotationRestartRequested: vmiUID}, vmi: vmiIn(v1.Running), wantAction: DeleteVMI},
		{name: "restart waits for the deletion", strategy: always, ann: map[string]string{v1.AnnotationRestartRequested: vmiUID}, vmi: deletingVMI(), wantAction: None},
		{name: "restart makes the new vmi", strategy: v1.RunStrategyManual, ann: map[string]string{v1.AnnotationRestartRequested: vmiUID}, wantAction: CreateVMI, wantRemoved: []string{v1.AnnotationRestartRequested}},
		{name: "restart done once a new vmi runs", strategy: always, ann: map[string]string{v1.AnnotationRestartRequested: "99999999-2222-3333-4444-555555555555"}, vmi: vmiIn(v1.Running), wantRemoved: []string{v1.AnnotationRestartRequested}},
		{name: "restart on halted: ignored", strategy: halted, ann: req(v1.AnnotationRestartRequested), wantRemoved: []string{v1.AnnotationRestartRequested}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(State{VM: vmWith(tt.strategy, tt.ann), VMI: tt.vmi, VolumesReady: !tt.notReady, Now: t0, Backoff: DefaultBackoff()})
			if d.Action != tt.wantAction {
				t.Errorf("action = %s, want %s", d.Action, tt.wantAction)
			}
			if (d.SetRunStrategy == nil) != (tt.wantStrategy == nil) || d.SetRunStrategy != nil && *d.SetRunStrategy != *tt.wantStrategy {
				t.Errorf("set run strategy = %v, want %v", deref(d.SetRunStrategy), deref(tt.wantStrategy))
			}
			if !slices.Equal(d.RemoveAnnotations, tt.wantRemoved) {
				t.Errorf("removed annotations = %v, want %v", d.RemoveAnnotations, tt.wantRemoved)
			}
			if len(d.SetAnnotations) != len(tt.wantSet) || d.SetAnnotations[v1.AnnotationRestartRequested] != tt.wantSet[v1.AnnotationRestartRequested] {
				t.Errorf("set annotations = %v, want %v", d.SetAnnotations, tt.wantSet)
			}
		})
	}
}

func deref(s *v1.VirtualMachineRunStrategy) string {
	if s == nil {
		return "<unchanged>"
	}
	return string(*s)
}

// TestLegacyRunning: running true is Always, false (or nothing) Halted.
func TestLegacyRunning(t *testing.T) {
	for _, tt := range []struct {
		running *bool
		want    v1.VirtualMachineRunStrategy
	}{{ptr.To(true), v1.RunStrategyAlways}, {ptr.To(false), v1.RunStrategyHalted}, {nil, v1.RunStrategyHalted}} {
		vm := &v1.VirtualMachine{}
		vm.Spec.Running = tt.running
		if got := vm.EffectiveRunStrategy(); got != tt.want {
			t.Errorf("running=%v: strategy %s, want %s", tt.running, got, tt.want)
		}
	}
}

// TestCrashLoopBackoff: VMIs failing in a row wait 0, 10 s, 20 s, 40 s ... up to 5 min; a
// clean shutdown or a long run clears the count.
func TestCrashLoopBackoff(t *testing.T) {
	vm := vmWith(v1.RunStrategyAlways, nil)
	var waits []time.Duration
	for i := range 8 {
		vmi := vmiIn(v1.Failed)
		vmi.UID = types.UID("uid-" + string(rune('a'+i)))
		d := Decide(State{VM: vm, VMI: vmi, VolumesReady: true, Now: t0, Backoff: DefaultBackoff()})
		vm.Status.StartFailure = d.StartFailure
		waits = append(waits, d.StartFailure.RetryAfterTimestamp.Sub(t0))
		// The same failure seen again is not counted twice.
		again := Decide(State{VM: vm, VMI: vmi, VolumesReady: true, Now: t0, Backoff: DefaultBackoff()})
		if again.StartFailure.ConsecutiveFailCount != i+1 {
			t.Fatalf("failure %d counted as %d", i+1, again.StartFailure.ConsecutiveFailCount)
		}
	}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	if !slices.Equal(waits, want) {
		t.Errorf("waits = %v, want %v", waits, want)
	}
	// While backing off, no VMI is made and the reconcile comes back when the wait ends.
	d := Decide(State{VM: vm, VMI: nil, VolumesReady: true, Now: t0.Add(time.Minute), Backoff: DefaultBackoff()})
	if d.Action != None || d.RequeueAfter != 4*time.Minute {
		t.Errorf("during back-off: action %s, requeue %s", d.Action, d.RequeueAfter)
	}
	if d := Decide(State{VM: vm, VMI: nil, VolumesReady: true, Now: t0.Add(6 * time.Minute), Backoff: DefaultBackoff()}); d.Action != CreateVMI {
		t.Errorf("after back-off: action %s", d.Action)
	}
	if d := Decide(State{VM: vm, VMI: vmiIn(v1.Succeeded), VolumesReady: true, Now: t0, Backoff: DefaultBackoff()}); d.StartFailure != nil {
		t.Errorf("a clean shutdown kept the failure count: %+v", d.StartFailure)
	}
	stable := vmiIn(v1.Failed)
	stable.UID = "uid-stable"
	stable.Status.PhaseTransitionTimestamps = []v1.VirtualMachineInstancePhaseTransitionTimestamp{
		{Phase: v1.Running, PhaseTransitionTimestamp: metav1.NewTime(t0)},
		{Phase: v1.Failed, PhaseTransitionTimestamp: metav1.NewTime(t0.Add(2 * time.Minute))},
	}
	if d := Decide(State{VM: vm, VMI: stable, VolumesReady: true, Now: t0, Backoff: DefaultBackoff()}); d.StartFailure.ConsecutiveFailCount != 1 {
		t.Errorf("a failure after a long run counts %d, want 1", d.StartFailure.ConsecutiveFailCount)
	}
}

func TestPrintableStatus(t *testing.T) {
	retry := metav1.NewTime(t0.Add(time.Minute))
	backoff := &v1.VirtualMachineStartFailure{ConsecutiveFailCount: 2, RetryAfterTimestamp: &retry}
	unsched := vmiIn(v1.Scheduling)
	unsched.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VMIReady, Status: "False", Reason: "Unschedulable"}}
	pvc := vmiIn(v1.Pending)
	pvc.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VMISynchronized, Status: "False", Reason: "PVCNotFound"}}
	paused := vmiIn(v1.Running)
	paused.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VMIPaused, Status: "True"}}
	deletingVM := vmWith(v1.RunStrategyAlways, nil)
	deletingVM.DeletionTimestamp = &metav1.Time{Time: t0}
	tests := []struct {
		name string
		vm   *v1.VirtualMachine
		vmi  *v1.VirtualMachineInstance
		vols Volumes
		d    Decision
		want v1.VirtualMachinePrintableStatus
	}{
		{"halted", vmWith(v1.RunStrategyHalted, nil), nil, Volumes{Ready: true}, Decision{}, v1.PrintableStopped},
		{"about to start", vmWith(v1.RunStrategyAlways, nil), nil, Volumes{Ready: true}, Decision{Action: CreateVMI}, v1.PrintableStarting},
		{"provisioning", vmWith(v1.RunStrategyAlways, nil), nil, Volumes{}, Decision{}, v1.PrintableProvisioning},
		{"datavolume failed", vmWith(v1.RunStrategyAlways, nil), nil, Volumes{Failed: "dv"}, Decision{}, v1.PrintableDataVolumeError},
		{"backing off", vmWith(v1.RunStrategyAlways, nil), nil, Volumes{Ready: true}, Decision{StartFailure: backoff}, v1.PrintableCrashLoopBackOff},
		{"failed vmi backing off", vmWith(v1.RunStrategyAlways, nil), vmiIn(v1.Failed), Volumes{Ready: true}, Decision{StartFailure: backoff}, v1.PrintableCrashLoopBackOff},
		{"scheduling", vmWith(v1.RunStrategyAlways, nil), vmiIn(v1.Scheduling), Volumes{Ready: true}, Decision{}, v1.PrintableStarting},
		{"unschedulable", vmWith(v1.RunStrategyAlways, nil), unsched, Volumes{Ready: true}, Decision{}, v1.PrintableErrorUnschedulable},
		{"pvc missing", vmWith(v1.RunStrategyAlways, nil), pvc, Volumes{Ready: true}, Decision{}, v1.PrintableErrorPvcNotFound},
		{"running", vmWith(v1.RunStrategyAlways, nil), vmiIn(v1.Running), Volumes{Ready: true}, Decision{}, v1.PrintableRunning},
		{"paused", vmWith(v1.RunStrategyAlways, nil), paused, Volumes{Ready: true}, Decision{}, v1.PrintablePaused},
		{"stopping", vmWith(v1.RunStrategyHalted, nil), deletingVMI(), Volumes{Ready: true}, Decision{}, v1.PrintableStopping},
		{"shut down, manual", vmWith(v1.RunStrategyManual, nil), vmiIn(v1.Succeeded), Volumes{Ready: true}, Decision{}, v1.PrintableStopped},
		{"vm deleting", deletingVM, vmiIn(v1.Running), Volumes{Ready: true}, Decision{}, v1.PrintableTerminating},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := printableStatus(State{VM: tt.vm, VMI: tt.vmi, Now: t0}, tt.vols, tt.d); got != tt.want {
				t.Errorf("printableStatus = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRestartRequired(t *testing.T) {
	vm := vmWith(v1.RunStrategyAlways, nil)
	vm.Spec.Template.Spec.Hostname = "a"
	vmi := vmiIn(v1.Running)
	vmi.Spec = *vm.Spec.Template.Spec.DeepCopy()
	has := func(st v1.VirtualMachineStatus) bool {
		for _, c := range st.Conditions {
			if c.Type == v1.VMRestartRequired {
				return true
			}
		}
		return false
	}
	s := State{VM: vm, VMI: vmi, Now: t0}
	if has(ComputeStatus(s, Volumes{Ready: true}, Decision{}, nil)) {
		t.Error("RestartRequired with an unchanged template")
	}
	vm.Spec.Template.Spec.Hostname = "b"
	st := ComputeStatus(s, Volumes{Ready: true}, Decision{}, nil)
	if !has(st) {
		t.Error("no RestartRequired after a template change")
	}
	vm.Status = st
	vmi.Spec.Hostname = "b"
	if has(ComputeStatus(s, Volumes{Ready: true}, Decision{}, nil)) {
		t.Error("RestartRequired kept once the VMI matches")
	}
}
