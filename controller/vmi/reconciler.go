// Package vmi reconciles VirtualMachineInstances: one launcher pod per VMI, and the VMI's status
// read off that pod.
package vmi

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/finalizer"
	"github.com/slimvirt/slimvirt/controller/metrics"
	"github.com/slimvirt/slimvirt/controller/requeue"
)

const (
	// Finalizer keeps a VMI until its launcher pod is gone, so no pod outlives its VMI.
	Finalizer = "slimvirt.io/launcher-pod"
	// problemRetry is how often a VMI whose pod cannot be made (a PVC missing, ...) is retried.
	problemRetry = 5 * time.Second
	// deleteRetry re-checks a VMI whose pod is terminating, in case a pod event is missed.
	deleteRetry = 5 * time.Second
)

// Event reasons of the VMI controller.
const (
	EventSuccessfulCreate = "SuccessfulCreate"
	EventFailedCreate     = "FailedCreate"
	EventSuccessfulDelete = "SuccessfulDelete"
	EventStarted          = "Started"
	EventDiskResized      = "DiskResized"
)

// Reconciler makes and watches launcher pods for VMIs.
type Reconciler struct {
	Client client.Client
	// APIReader reads past the cache, where a stale read could duplicate a pod.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Metrics   *metrics.Metrics
	Pod       PodConfig
	// AllowCustomMACs lets a VMI's bridge interface use a MAC that is not locally administered.
	AllowCustomMACs bool
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// SetupWithManager registers the reconciler; it watches VMIs and the pods they own, and tells
// of disks that grew as the VMIs' status changes.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VirtualMachineInstance{}).
		Owns(&corev1.Pod{}).
		Watches(&v1.VirtualMachineInstance{}, handler.Funcs{UpdateFunc: r.diskGrowthEvents}).
		Named("vmi").
		Complete(r)
}

// diskGrowthEvents emits a DiskResized event for each disk whose size the node agent raised in
// status.volumeStatus between two versions of a VMI. It runs on the change itself, not in
// Reconcile, which sees only the newest version: every growth is told once, and a controller
// that starts (or takes over the lease) sees VMIs as new and tells nothing again. A growth
// written while no controller ran is in the status, not in the events.
func (r *Reconciler) diskGrowthEvents(_ context.Context, e event.UpdateEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	before, ok := e.ObjectOld.(*v1.VirtualMachineInstance)
	after, ok2 := e.ObjectNew.(*v1.VirtualMachineInstance)
	if !ok || !ok2 {
		return
	}
	for _, vs := range DiskGrowths(before.Status.VolumeStatus, after.Status.VolumeStatus) {
		r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, EventDiskResized, "ResizeDisk", "disk %s grew to %d bytes", vs.Name, vs.Size)
	}
}

// Reconcile brings one VMI's pod and status up to date.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vmi := &v1.VirtualMachineInstance{}
	if err := r.Client.Get(ctx, req.NamespacedName, vmi); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var err error
	if !vmi.DeletionTimestamp.IsZero() {
		err = r.reconcileDelete(ctx, vmi)
	} else {
		err = r.reconcile(ctx, vmi)
	}
	if requeue.IsFailure(err) {
		r.Metrics.ReconcileErrors.WithLabelValues("vmi").Inc()
	}
	return requeue.Result(ctrl.Result{}, err)
}

func (r *Reconciler) reconcile(ctx context.Context, vmi *v1.VirtualMachineInstance) error {
	if err := finalizer.Ensure(ctx, r.Client, vmi, Finalizer); err != nil {
		return err
	}
	obs, err := r.observe(ctx, vmi)
	if err != nil {
		return err
	}
	if err := r.writeStatus(ctx, vmi, obs); err != nil {
		return err
	}
	if obs.Problem != nil {
		return requeue.After(problemRetry, obs.Problem.Reason)
	}
	return nil
}

// observe finds the VMI's launcher pod, making it when it is due.
func (r *Reconciler) observe(ctx context.Context, vmi *v1.VirtualMachineInstance) (Observation, error) {
	name := vmi.Status.LauncherPod
	var pod *corev1.Pod
	var err error
	if name == "" {
		pod, err = r.findPod(ctx, vmi)
	} else {
		pod, err = r.getPod(ctx, vmi, name)
	}
	if err == nil && awaitsSignature(pod) {
		// Made by a controller that stopped before it signed it.
		pod, err = r.releasePod(ctx, vmi, pod)
	}
	if err != nil || pod != nil {
		return Observation{PodName: podName(pod), Pod: pod}, err
	}
	if phase := vmi.Status.Phase; phase != "" && phase != v1.Pending {
		// The pod existed and is gone: the VMI fails (or stays final); it gets no new pod.
		return Observation{PodName: name}, nil
	}
	return r.createPod(ctx, vmi, name)
}

// findPod looks for a launcher pod of this VMI by label and owner, past the cache.
func (r *Reconciler) findPod(ctx context.Context, vmi *v1.VirtualMachineInstance) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.InNamespace(vmi.Namespace), client.MatchingLabels{launcherpod.LabelVMI: vmi.Name}); err != nil {
		return nil, fmt.Errorf("list launcher pods of vmi %s: %w", vmi.Name, err)
	}
	for i := range pods.Items {
		if metav1.IsControlledBy(&pods.Items[i], vmi) {
			return &pods.Items[i], nil
		}
	}
	return nil, nil
}

func (r *Reconciler) chooseName(ctx context.Context, vmi *v1.VirtualMachineInstance) (string, error) {
	name := "virt-launcher-" + vmi.Name + "-" + rand.String(5)
	before := vmi.DeepCopy()
	vmi.Status.LauncherPod = name
	if vmi.Status.Phase == "" {
		vmi.Status.Phase = v1.Pending
		vmi.Status.PhaseTransitionTimestamps = append(vmi.Status.PhaseTransitionTimestamps,
			v1.VirtualMachineInstancePhaseTransitionTimestamp{Phase: v1.Pending, PhaseTransitionTimestamp: r.now()})
	}
	if err := r.Client.Status().Patch(ctx, vmi, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return "", fmt.Errorf("record launcher pod name of vmi %s: %w", vmi.Name, err)
	}
	return name, nil
}

// getPod reads the named pod from the cache, and past it when the cache has not seen it yet.
func (r *Reconciler) getPod(ctx context.Context, vmi *v1.VirtualMachineInstance, name string) (*corev1.Pod, error) {
	key := types.NamespacedName{Namespace: vmi.Namespace, Name: name}
	pod := &corev1.Pod{}
	err := r.Client.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, pod)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get launcher pod %s: %w", name, err)
	}
	if !metav1.IsControlledBy(pod, vmi) {
		return nil, fmt.Errorf("pod %s exists but does not belong to vmi %s", name, vmi.Name)
	}
	return pod, nil
}

// createPod makes the VMI's launcher pod once everything it refers to exists.
func (r *Reconciler) createPod(ctx context.Context, vmi *v1.VirtualMachineInstance, name string) (Observation, error) {
	if problem := macProblem(vmi, r.AllowCustomMACs); problem != nil {
		if !hasProblem(vmi, problem) {
			r.Recorder.Eventf(vmi, nil, corev1.EventTypeWarning, problem.Reason, "CreatePod", "%s", problem.Message)
		}
		return Observation{PodName: name, Problem: problem}, nil
	}
	facts, problem, err := r.volumeFacts(ctx, vmi)
	if err != nil || problem != nil {
		if problem != nil && !hasProblem(vmi, problem) {
			r.Recorder.Eventf(vmi, nil, corev1.EventTypeWarning, problem.Reason, "CreatePod", "%s", problem.Message)
		}
		return Observation{PodName: name, Problem: problem}, err
	}
	if name == "" {
		// The name is recorded before the pod is made, under optimistic locking: a restarted
		// controller, or one reading a stale cache, then makes the same pod or none.
		if name, err = r.chooseName(ctx, vmi); err != nil {
			return Observation{}, err
		}
	}
	pod, err := BuildPod(r.Pod, vmi, name, facts)
	if err != nil {
		return Observation{}, err
	}
	err = r.Client.Create(ctx, pod)
	if apierrors.IsAlreadyExists(err) {
		pod, err = r.getPod(ctx, vmi, name)
		if err == nil && awaitsSignature(pod) {
			pod, err = r.releasePod(ctx, vmi, pod)
		}
		return Observation{PodName: name, Pod: pod}, err
	}
	if refused(err) {
		// The VMI passed its own validation and still makes a pod the API server refuses (an
		// extended resource it does not know, a missing PriorityClass): retrying at once cannot
		// help, so the VMI says why, and the pod is tried again now and then.
		problem := &Problem{EventFailedCreate, fmt.Sprintf("the API server refused launcher pod %s: %v", name, err)}
		if !hasProblem(vmi, problem) {
			r.Recorder.Eventf(vmi, nil, corev1.EventTypeWarning, EventFailedCreate, "CreatePod", "%s", problem.Message)
		}
		return Observation{PodName: name, Problem: problem}, nil
	}
	if err != nil {
		r.Recorder.Eventf(vmi, nil, corev1.EventTypeWarning, EventFailedCreate, "CreatePod", "create launcher pod %s: %v", name, err)
		return Observation{}, fmt.Errorf("create launcher pod %s: %w", name, err)
	}
	log.FromContext(ctx).Info("created launcher pod", "pod", name)
	r.Recorder.Eventf(vmi, pod, corev1.EventTypeNormal, EventSuccessfulCreate, "CreatePod", "Created launcher pod %s", name)
	if pod, err = r.releasePod(ctx, vmi, pod); err != nil {
		// The next reconcile finds the pod still gated and signs it.
		return Observation{PodName: name}, err
	}
	return Observation{PodName: name, Pod: pod}, nil
}

// writeStatus stores the computed status when it changed, refusing to write over a newer one.
func (r *Reconciler) writeStatus(ctx context.Context, vmi *v1.VirtualMachineInstance, obs Observation) error {
	st := ComputeStatus(vmi, obs, r.now())
	if apiequality.Semantic.DeepEqual(st, vmi.Status) {
		return nil
	}
	before := vmi.DeepCopy()
	oldPhase := vmi.Status.Phase
	vmi.Status = st
	if err := r.Client.Status().Patch(ctx, vmi, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("update status of vmi %s: %w", vmi.Name, err)
	}
	if st.Phase != oldPhase {
		r.phaseChanged(ctx, vmi, oldPhase)
	}
	return nil
}

func (r *Reconciler) phaseChanged(ctx context.Context, vmi *v1.VirtualMachineInstance, from v1.VirtualMachineInstancePhase) {
	st := vmi.Status
	log.FromContext(ctx).Info("vmi phase changed", "from", from, "to", st.Phase, "reason", st.Reason)
	switch st.Phase {
	case v1.Running:
		r.Metrics.StartLatency.Observe(r.now().Sub(vmi.CreationTimestamp.Time).Seconds())
		r.Recorder.Eventf(vmi, nil, corev1.EventTypeNormal, EventStarted, "Start", "VMI is running on node %s", st.NodeName)
	case v1.Succeeded:
		r.Recorder.Eventf(vmi, nil, corev1.EventTypeNormal, st.Reason, "Stop", "VMI succeeded: %s", firstNonEmpty(st.Message, "the guest shut down"))
	case v1.Failed:
		r.Recorder.Eventf(vmi, nil, corev1.EventTypeWarning, st.Reason, "Stop", "VMI failed: %s", firstNonEmpty(st.Message, st.Reason))
	}
}

// reconcileDelete deletes the VMI's pods and lets the VMI go once they are gone.
func (r *Reconciler) reconcileDelete(ctx context.Context, vmi *v1.VirtualMachineInstance) error {
	if !controllerutil.ContainsFinalizer(vmi, Finalizer) {
		return nil
	}
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.InNamespace(vmi.Namespace), client.MatchingLabels{launcherpod.LabelVMI: vmi.Name}); err != nil {
		return fmt.Errorf("list launcher pods of vmi %s: %w", vmi.Name, err)
	}
	remaining := 0
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !metav1.IsControlledBy(pod, vmi) {
			continue
		}
		remaining++
		if pod.DeletionTimestamp != nil {
			continue
		}
		if err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete launcher pod %s: %w", pod.Name, err)
		}
		r.Recorder.Eventf(vmi, pod, corev1.EventTypeNormal, EventSuccessfulDelete, "DeletePod", "Deleted launcher pod %s", pod.Name)
	}
	if remaining > 0 {
		return requeue.After(deleteRetry, "launcher pod terminating")
	}
	before := vmi.DeepCopy()
	controllerutil.RemoveFinalizer(vmi, Finalizer)
	// Gone already (a reconcile queued before the last one removed the finalizer): done.
	if err := r.Client.Patch(ctx, vmi, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer from vmi %s: %w", vmi.Name, err)
	}
	return nil
}

func (r *Reconciler) now() metav1.Time {
	if r.Now != nil {
		return metav1.NewTime(r.Now())
	}
	return metav1.Now()
}

// hasProblem says whether the VMI already reports problem, so a retry does not repeat its event.
func hasProblem(vmi *v1.VirtualMachineInstance, problem *Problem) bool {
	for _, c := range vmi.Status.Conditions {
		if c.Type == v1.VMISynchronized {
			return c.Status == corev1.ConditionFalse && c.Reason == problem.Reason && c.Message == problem.Message
		}
	}
	return false
}

// refused says whether the API server refused a pod for what it is, so the same pod would be
// refused again; a namespace being deleted is not such a refusal.
func refused(err error) bool {
	if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
		return false
	}
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err)
}

func podName(pod *corev1.Pod) string {
	if pod == nil {
		return ""
	}
	return pod.Name
}
