package vmirs

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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

const (
	// Finalizer keeps a replica set until its VMIs are gone.
	Finalizer = "slimvirt.io/vmis"
	// deleteRetry re-checks a replica set whose VMIs are going away.
	deleteRetry = 5 * time.Second
	// failureRetry retries a replica set whose VMIs could not be made.
	failureRetry = 10 * time.Second
)

// Reconciler keeps replica sets' VMIs at their replica count.
type Reconciler struct {
	Client client.Client
	// APIReader lists VMIs past the cache: a stale list would make too many.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Metrics   *metrics.Metrics
}

// SetupWithManager registers the reconciler; it watches replica sets and the VMIs they own.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VirtualMachineInstanceReplicaSet{}).
		Owns(&v1.VirtualMachineInstance{}).
		Named("vmirs").
		Complete(r)
}

// Reconcile brings one replica set's VMIs and status up to date.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rs := &v1.VirtualMachineInstanceReplicaSet{}
	if err := r.Client.Get(ctx, req.NamespacedName, rs); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var err error
	if !rs.DeletionTimestamp.IsZero() {
		err = r.reconcileDelete(ctx, rs)
	} else {
		err = r.reconcile(ctx, rs)
	}
	if requeue.IsFailure(err) {
		r.Metrics.ReconcileErrors.WithLabelValues("vmirs").Inc()
	}
	return requeue.Result(ctrl.Result{}, err)
}

func (r *Reconciler) reconcile(ctx context.Context, rs *v1.VirtualMachineInstanceReplicaSet) error {
	if err := finalizer.Ensure(ctx, r.Client, rs, Finalizer); err != nil {
		return err
	}
	selector, err := r.selector(rs)
	var failure *Failure
	var vmis []v1.VirtualMachineInstance
	if err != nil {
		failure = &Failure{"SelectorMismatch", err.Error()}
	} else if vmis, err = r.owned(ctx, rs); err != nil {
		return err
	} else if vmis, err = r.adoptOrphans(ctx, rs, selector, vmis); err != nil {
		return err
	} else if !rs.Spec.Paused {
		failure = r.scale(ctx, rs, vmis)
	}
	st := ComputeStatus(rs, vmis, selectorString(selector), failure, metav1.Now())
	if !apiequality.Semantic.DeepEqual(st, rs.Status) {
		before := rs.DeepCopy()
		rs.Status = st
		if err := r.Client.Status().Patch(ctx, rs, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("update status of vmirs %s: %w", rs.Name, err)
		}
	}
	if failure != nil {
		return requeue.After(failureRetry, failure.Reason)
	}
	return nil
}

// selector is the replica set's selector; it must select the template, or the replica set
// would make VMIs forever without ever counting them.
func (r *Reconciler) selector(rs *v1.VirtualMachineInstanceReplicaSet) (labels.Selector, error) {
	if rs.Spec.Selector == nil {
		return nil, errors.New("spec.selector is empty")
	}
	ls := metav1.LabelSelector(*rs.Spec.Selector)
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		return nil, fmt.Errorf("spec.selector: %w", err)
	}
	if sel.Empty() {
		return nil, errors.New("spec.selector is empty: it would select every VMI in the namespace")
	}
	if !sel.Matches(labels.Set(rs.Spec.Template.ObjectMeta.Labels)) {
		return sel, errors.New("spec.selector does not select spec.template.metadata.labels")
	}
	return sel, nil
}

func selectorString(sel labels.Selector) string {
	if sel == nil {
		return ""
	}
	return sel.String()
}

// owned lists the replica set's VMIs (by owner, so a changed template or selector loses none)
// from the API server itself: a cached list that lags behind the VMIs just made would make
// them again.
func (r *Reconciler) owned(ctx context.Context, rs *v1.VirtualMachineInstanceReplicaSet) ([]v1.VirtualMachineInstance, error) {
	var list v1.VirtualMachineInstanceList
	if err := r.APIReader.List(ctx, &list, client.InNamespace(rs.Namespace)); err != nil {
		return nil, fmt.Errorf("list vmis of vmirs %s: %w", rs.Name, err)
	}
	var out []v1.VirtualMachineInstance
	for _, vmi := range list.Items {
		if metav1.IsControlledBy(&vmi, rs) {
			out = append(out, vmi)
		}
	}
	return out, nil
}

// adoptOrphans makes the replica set the controller of the VMIs its selector matches that have
// no controller (made by hand, or left by a replica set deleted with --cascade=orphan), as a
// ReplicaSet adopts pods and KubeVirt's replica set adopts VMIs; a VMI that has finished is left
// alone. The owner reference is added with an optimistic lock, so a VMI another controller
// claimed in the meantime is not taken.
func (r *Reconciler) adoptOrphans(ctx context.Context, rs *v1.VirtualMachineInstanceReplicaSet, sel labels.Selector, owned []v1.VirtualMachineInstance) ([]v1.VirtualMachineInstance, error) {
	if rs.Spec.Paused {
		return owned, nil
	}
	var list v1.VirtualMachineInstanceList
	if err := r.APIReader.List(ctx, &list, client.InNamespace(rs.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("list orphan vmis for vmirs %s: %w", rs.Name, err)
	}
	for i := range list.Items {
		vmi := &list.Items[i]
		if metav1.GetControllerOf(vmi) != nil || vmi.DeletionTimestamp != nil || vmi.Status.Phase.IsFinal() {
			continue
		}
		before := vmi.DeepCopy()
		vmi.OwnerReferences = append(vmi.OwnerReferences, *metav1.NewControllerRef(rs, v1.GroupVersion.WithKind("VirtualMachineInstanceReplicaSet")))
		if err := r.Client.Patch(ctx, vmi, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("adopt vmi %s into vmirs %s: %w", vmi.Name, rs.Name, err)
		}
		log.FromContext(ctx).Info("adopted vmi", "vmi", vmi.Name)
		r.Recorder.Eventf(rs, vmi, corev1.EventTypeNormal, "SuccessfulAdopt", "AdoptVMI", "Adopted virtual machine instance %s", vmi.Name)
		owned = append(owned, *vmi)
	}
	return owned, nil
}

// scale makes and deletes VMIs to reach spec.replicas; a failure is reported, not returned, so
// the status still shows what exists.
func (r *Reconciler) scale(ctx context.Context, rs *v1.VirtualMachineInstanceReplicaSet, vmis []v1.VirtualMachineInstance) *Failure {
	want := int32(1)
	if rs.Spec.Replicas != nil {
		want = *rs.Spec.Replicas
	}
	plan := PlanReplicas(int(want), vmis)
	for range plan.Create {
		vmi := newVMI(rs)
		if err := r.Client.Create(ctx, vmi); err != nil {
			msg := createFailureMessage(err)
			r.Recorder.Eventf(rs, nil, corev1.EventTypeWarning, "FailedCreate", "CreateVMI", "create vmi: %s", msg)
			return &Failure{"FailedCreate", msg}
		}
		log.FromContext(ctx).Info("created vmi", "vmi", vmi.Name)
		r.Recorder.Eventf(rs, vmi, corev1.EventTypeNormal, "SuccessfulCreate", "CreateVMI", "Created virtual machine instance %s", vmi.Name)
	}
	for _, vmi := range plan.Delete {
		if err := r.Client.Delete(ctx, vmi, client.Preconditions{UID: &vmi.UID}); client.IgnoreNotFound(err) != nil {
			r.Recorder.Eventf(rs, vmi, corev1.EventTypeWarning, "FailedDelete", "DeleteVMI", "delete vmi %s: %v", vmi.Name, err)
			return &Failure{"FailedDelete", err.Error()}
		}
		r.Recorder.Eventf(rs, vmi, corev1.EventTypeNormal, "SuccessfulDelete", "DeleteVMI", "Deleted virtual machine instance %s", vmi.Name)
	}
	return nil
}

func newVMI(rs *v1.VirtualMachineInstanceReplicaSet) *v1.VirtualMachineInstance {
	t := rs.Spec.Template
	return &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    rs.Name + "-",
			Namespace:       rs.Namespace,
			Labels:          t.ObjectMeta.Labels,
			Annotations:     t.ObjectMeta.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, v1.GroupVersion.WithKind("VirtualMachineInstanceReplicaSet"))},
		},
		Spec: *t.Spec.DeepCopy(),
	}
}

// reconcileDelete deletes the replica set's VMIs and lets it go once they are gone.
func (r *Reconciler) reconcileDelete(ctx context.Context, rs *v1.VirtualMachineInstanceReplicaSet) error {
	if !controllerutil.ContainsFinalizer(rs, Finalizer) {
		return nil
	}
	vmis, err := r.owned(ctx, rs)
	if err != nil {
		return err
	}
	for i := range vmis {
		if vmis[i].DeletionTimestamp != nil {
			continue
		}
		if err := r.Client.Delete(ctx, &vmis[i], client.Preconditions{UID: &vmis[i].UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete vmi %s of vmirs %s: %w", vmis[i].Name, rs.Name, err)
		}
	}
	if len(vmis) > 0 {
		return requeue.After(deleteRetry, "vmis terminating")
	}
	before := rs.DeepCopy()
	controllerutil.RemoveFinalizer(rs, Finalizer)
	// Gone already (a reconcile queued before the last one removed the finalizer): done.
	if err := r.Client.Patch(ctx, rs, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("remove finalizer from vmirs %s: %w", rs.Name, err)
	}
	return nil
}
