package vm

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/finalizer"
	"github.com/slimvirt/slimvirt/controller/metrics"
	"github.com/slimvirt/slimvirt/controller/requeue"
)

// Finalizer keeps a VM until its VMI (and so its pod) is gone.
const Finalizer = "slimvirt.io/vmi"

// deleteRetry re-checks a VM whose VMI is going away, in case an event is missed.
const deleteRetry = 5 * time.Second

// Reconciler runs VMs' VMIs by their run strategies.
type Reconciler struct {
	Client client.Client
	// APIReader reads past the cache where a stale read would make a wrong decision.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Metrics   *metrics.Metrics
	// Backoff is the crash-loop back-off; DefaultBackoff when zero.
	Backoff Backoff
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// SetupWithManager registers the reconciler; it watches VMs and the VMIs and DataVolumes they own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Backoff == (Backoff{}) {
		r.Backoff = DefaultBackoff()
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VirtualMachine{}).
		Owns(&v1.VirtualMachineInstance{}).
		Owns(&v1.DataVolume{}).
		Named("vm").
		Complete(r)
}

// Reconcile brings one VM's VMI, spec requests and status up to date.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vm := &v1.VirtualMachine{}
	if err := r.Client.Get(ctx, req.NamespacedName, vm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var res ctrl.Result
	var err error
	if !vm.DeletionTimestamp.IsZero() {
		err = r.reconcileDelete(ctx, vm)
	} else {
		res, err = r.reconcile(ctx, vm)
	}
	if requeue.IsFailure(err) {
		r.Metrics.ReconcileErrors.WithLabelValues("vm").Inc()
	}
	return requeue.Result(res, err)
}

func (r *Reconciler) reconcile(ctx context.Context, vm *v1.VirtualMachine) (ctrl.Result, error) {
	if err := finalizer.Ensure(ctx, r.Client, vm, Finalizer); err != nil {
		return ctrl.Result{}, err
	}
	vmi, failure, err := r.getVMI(ctx, vm)
	if err != nil {
		return ctrl.Result{}, err
	}
	vols, err := r.ensureDataVolumes(ctx, vm)
	if err != nil {
		return ctrl.Result{}, err
	}
	s := State{VM: vm, VMI: vmi, VolumesReady: vols.Ready, Now: r.Now(), Backoff: r.Backoff}
	d := Decide(s)
	if failure == nil {
		if s.VMI, failure, err = r.act(ctx, vm, vmi, d); err != nil {
			return ctrl.Result{}, err
		}
	}
	if failure == nil {
		failure = vols.Refused
	}
	if err := r.applyRequests(ctx, vm, d); err != nil {
		return ctrl.Result{}, err
	}
	if d.Event != nil {
		r.Recorder.Eventf(vm, nil, d.Event.Type, d.Event.Reason, "Request", "%s", d.Event.Message)
	}
	if err := r.writeStatus(ctx, vm, ComputeStatus(s, vols, d, failure)); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: max(d.RequeueAfter, 0)}, nil
}

// getVMI returns the VM's VMI; a VMI of the same name that the VM does not own is a failure.
func (r *Reconciler) getVMI(ctx context.Context, vm *v1.VirtualMachine) (*v1.VirtualMachineInstance, *Problem, error) {
	vmi := &v1.VirtualMachineInstance{}
	key := types.NamespacedName{Namespace: vm.Namespace, Name: vm.Name}
	err := r.Client.Get(ctx, key, vmi)
	if apierrors.IsNotFound(err) {
		// The cache may not have seen a VMI made a moment ago; ask the API server before
		// deciding that there is none.
		err = r.APIReader.Get(ctx, key, vmi)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get vmi of vm %s: %w", vm.Name, err)
	}
	if !metav1.IsControlledBy(vmi, vm) {
		return nil, &Problem{"VMINotOwned", fmt.Sprintf("a VirtualMachineInstance named %s exists and belongs to something else", vm.Name)}, nil
	}
	return vmi, nil, nil
}

// act carries out the decision's action and returns the VMI as it is afterwards.
func (r *Reconciler) act(ctx context.Context, vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance, d Decision) (*v1.VirtualMachineInstance, *Problem, error) {
	switch d.Action {
	case CreateVMI:
		created := NewVMI(vm)
		err := r.Client.Create(ctx, created)
		if apierrors.IsAlreadyExists(err) {
			return vmi, nil, requeue.After(time.Second, "vmi already exists")
		}
		if err != nil {
			r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "FailedCreate", "CreateVMI", "create vmi: %v", err)
			return nil, &Problem{"FailedCreate", err.Error()}, nil
		}
		log.FromContext(ctx).Info("created vmi", "vmi", created.Name, "uid", created.UID)
		r.Recorder.Eventf(vm, created, corev1.EventTypeNormal, "SuccessfulCreate", "CreateVMI", "Created virtual machine instance %s", created.Name)
		return created, nil, nil
	case DeleteVMI:
		err := r.Client.Delete(ctx, vmi, client.Preconditions{UID: &vmi.UID})
		if client.IgnoreNotFound(err) != nil {
			r.Recorder.Eventf(vm, vmi, corev1.EventTypeWarning, "FailedDelete", "DeleteVMI", "delete vmi: %v", err)
			return vmi, &Problem{"FailedDelete", err.Error()}, nil
		}
		log.FromContext(ctx).Info("deleted vmi", "vmi", vmi.Name, "uid", vmi.UID)
		r.Recorder.Eventf(vm, vmi, corev1.EventTypeNormal, "SuccessfulDelete", "DeleteVMI", "Deleted virtual machine instance %s", vmi.UID)
		gone := vmi.DeepCopy()
		now := metav1.NewTime(r.Now())
		gone.DeletionTimestamp = &now
		return gone, nil, nil
	}
	return vmi, nil, nil
}

// NewVMI is the VMI a VM runs: its template, named after the VM and owned by it.
func NewVMI(vm *v1.VirtualMachine) *v1.VirtualMachineInstance {
	t := vm.Spec.Template
	return &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{
			Name:            vm.Name,
			Namespace:       vm.Namespace,
			Labels:          t.ObjectMeta.Labels,
			Annotations:     t.ObjectMeta.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: *t.Spec.DeepCopy(),
	}
}

// applyRequests writes the decision's changes to the VM's spec and request annotations, under
// optimistic locking so a user's concurrent change is never overwritten.
func (r *Reconciler) applyRequests(ctx context.Context, vm *v1.VirtualMachine, d Decision) error {
	before := vm.DeepCopy()
	if s := d.SetRunStrategy; s != nil {
		if vm.Spec.Running != nil {
			vm.Spec.Running = ptr.To(*s == v1.RunStrategyAlways)
		} else {
			vm.Spec.RunStrategy = ptr.To(*s)
		}
	}
	for k, v := range d.SetAnnotations {
		if vm.Annotations == nil {
			vm.Annotations = map[string]string{}
		}
		vm.Annotations[k] = v
	}
	for _, k := range d.RemoveAnnotations {
		delete(vm.Annotations, k)
	}
	if apiequality.Semantic.DeepEqual(before.Spec, vm.Spec) && apiequality.Semantic.DeepEqual(before.Annotations, vm.Annotations) {
		return nil
	}
	if err := r.Client.Patch(ctx, vm, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("update requests of vm %s: %w", vm.Name, err)
	}
	if d.SetRunStrategy != nil {
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, "RunStrategyChanged", "Request", "runStrategy is now %s", *d.SetRunStrategy)
	}
	return nil
}

func (r *Reconciler) writeStatus(ctx context.Context, vm *v1.VirtualMachine, st v1.VirtualMachineStatus) error {
	if apiequality.Semantic.DeepEqual(st, vm.Status) {
		return nil
	}
	before := vm.DeepCopy()
	vm.Status = st
	if err := r.Client.Status().Patch(ctx, vm, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("update status of vm %s: %w", vm.Name, err)
	}
	return nil
}

// reconcileDelete deletes the VM's VMI and DataVolumes and lets the VM go once the VMI is gone.
func (r *Reconciler) reconcileDelete(ctx context.Context, vm *v1.VirtualMachine) error {
	if !controllerutil.ContainsFinalizer(vm, Finalizer) {
		return nil
	}
	vmi, _, err := r.getVMI(ctx, vm)
	if err != nil {
		return err
	}
	if vmi != nil {
		if vmi.DeletionTimestamp == nil {
			if err := r.Client.Delete(ctx, vmi, client.Preconditions{UID: &vmi.UID}); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete vmi of vm %s: %w", vm.Name, err)
			}
		}
		return requeue.After(deleteRetry, "vmi terminating")
	}
	if err := r.deleteDataVolumes(ctx, vm); err != nil {
		return err
	}
	before := vm.DeepCopy()
	controllerutil.RemoveFinalizer(vm, Finalizer)
	// Gone already (a reconcile queued before the last one removed the finalizer): done.
	if err := r.Client.Patch(ctx, vm, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer from vm %s: %w", vm.Name, err)
	}
	return nil
}
