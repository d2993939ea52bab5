// Package vmsnapshot reconciles VirtualMachineSnapshots: it captures the VM's spec in a
// VirtualMachineSnapshotContent and makes one CSI VolumeSnapshot per persistent disk, freezing
// a running guest's filesystems through its agent around their creation (KubeVirt's order),
// and reports the snapshot ready when every VolumeSnapshot is.
package vmsnapshot

import (
	"context"
	"errors"
	"fmt"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/finalizer"
	"github.com/slimvirt/slimvirt/controller/requeue"
)

const (
	// Finalizer lets a snapshot that is being deleted thaw its VM first.
	Finalizer = "slimvirt.io/vmsnapshot-protection"
	// AnnSnapshot names, on a content and on its VolumeSnapshots, the snapshot they belong to.
	AnnSnapshot = "snapshot.slimvirt.io/vmsnapshot"
	// UnfreezeTimeout is how long a guest stays frozen at most if nothing thaws it: the
	// launcher thaws it by itself then, whatever happened to the controller.
	UnfreezeTimeout = 5 * time.Minute
	// thawTimeout bounds the thaw call that follows the VolumeSnapshots' creation.
	thawTimeout = 30 * time.Second
	// retry is how soon a snapshot waiting on something is looked at again.
	retry = 10 * time.Second
)

// Reconciler takes VirtualMachineSnapshots.
type Reconciler struct {
	Client   client.Client
	Recorder recorder.EventRecorder
	// Freezer freezes running guests; NewAPIFreezer's in the controller.
	Freezer Freezer
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// SetupWithManager registers the reconciler; it watches snapshots, their contents and their
// VolumeSnapshots (found through AnnSnapshot: a retained content has no owner).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Freezer == nil {
		return errors.New("vmsnapshot: no Freezer")
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1.VirtualMachineSnapshot{}).
		Watches(&v1.VirtualMachineSnapshotContent{}, handler.EnqueueRequestsFromMapFunc(bySnapshot)).
		Watches(&snapv1.VolumeSnapshot{}, handler.EnqueueRequestsFromMapFunc(bySnapshot)).
		Named("vmsnapshot").
		Complete(r)
}

func bySnapshot(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetAnnotations()[AnnSnapshot]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// Reconcile brings one snapshot's content, VolumeSnapshots and status up to date.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := &v1.VirtualMachineSnapshot{}
	if err := r.Client.Get(ctx, req.NamespacedName, s); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !s.DeletionTimestamp.IsZero() {
		return requeue.Result(ctrl.Result{}, r.reconcileDelete(ctx, s))
	}
	if err := finalizer.Ensure(ctx, r.Client, s, Finalizer); err != nil {
		return requeue.Result(ctrl.Result{}, err)
	}
	obs, content, err := r.reconcile(ctx, s)
	if err != nil && !errors.As(err, new(*requeue.Error)) {
		return requeue.Result(ctrl.Result{}, err)
	}
	st := Status(s, obs, content, r.Now())
	if werr := r.writeStatus(ctx, s, st); werr != nil {
		return requeue.Result(ctrl.Result{}, werr)
	}
	return requeue.Result(nextLook(s, st, r.Now()), err)
}

// nextLook is when an unfinished snapshot is looked at again: at its failure deadline, and
// while it waits, every retry.
func nextLook(s *v1.VirtualMachineSnapshot, st v1.VirtualMachineSnapshotStatus, now time.Time) ctrl.Result {
	if st.Phase != v1.SnapshotInProgress {
		return ctrl.Result{}
	}
	after := retry
	if d := s.Spec.FailureDeadline; d != nil && d.Duration > 0 {
		left := s.CreationTimestamp.Add(d.Duration).Sub(now) + time.Second
		after = min(after, max(left, time.Second))
	}
	return ctrl.Result{RequeueAfter: after}
}

// reconcileDelete thaws the VM of a snapshot deleted while in progress (the controller may
// have stopped between freeze and thaw), then lets it go. The content and the VolumeSnapshots
// go with it through their owner references, or stay (Retain).
func (r *Reconciler) reconcileDelete(ctx context.Context, s *v1.VirtualMachineSnapshot) error {
	if !controllerutil.ContainsFinalizer(s, Finalizer) {
		return nil
	}
	if s.Status.Phase == v1.SnapshotInProgress && contains(s.Status.Indications, v1.IndicationGuestAgent) {
		if err := r.Freezer.Unfreeze(ctx, s.Namespace, s.Spec.Source.Name); err != nil {
			log.FromContext(ctx).Info("thaw on delete failed; the launcher thaws after its timeout", "vm", s.Spec.Source.Name, "error", err.Error())
		}
	}
	patch := client.MergeFrom(s.DeepCopy())
	controllerutil.RemoveFinalizer(s, Finalizer)
	if err := r.Client.Patch(ctx, s, patch); err != nil {
		return fmt.Errorf("remove finalizer of vmsnapshot %s: %w", s.Name, client.IgnoreNotFound(err))
	}
	return nil
}

// reconcile makes what is missing and observes the rest.
func (r *Reconciler) reconcile(ctx context.Context, s *v1.VirtualMachineSnapshot) (Observation, v1.VirtualMachineSnapshotContentStatus, error) {
	var none v1.VirtualMachineSnapshotContentStatus
	if s.Status.Phase == v1.SnapshotFailed {
		return Observation{}, none, nil
	}
	vm, problem, err := r.source(ctx, s)
	if err != nil || problem != "" {
		return Observation{Problem: problem}, none, err
	}
	obs := Observation{SourceUID: string(vm.UID)}
	content, err := r.content(ctx, s, vm)
	var p *Problem
	if errors.As(err, &p) {
		return Observation{Problem: p.Message, SourceUID: obs.SourceUID}, none, nil
	}
	if err != nil {
		return obs, none, err
	}
	obs.Content = content.Name
	if cvm := content.Spec.Source.VirtualMachine; cvm != nil {
		included, excluded := Volumes(&cvm.Spec)
		obs.Included, obs.Excluded = names(included), excluded
	}
	for _, b := range content.Spec.VolumeBackups {
		obs.Expected = append(obs.Expected, ptr.Deref(b.VolumeSnapshotName, ""))
	}
	if obs.VolumeSnapshots, err = r.volumeSnapshots(ctx, s.Namespace, obs.Expected); err != nil {
		return obs, none, err
	}
	var missing []v1.VolumeBackup
	for _, b := range content.Spec.VolumeBackups {
		if obs.VolumeSnapshots[ptr.Deref(b.VolumeSnapshotName, "")] == nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 && s.Status.Phase != v1.SnapshotSucceeded {
		ind, err := r.createVolumeSnapshots(ctx, s, vm, content, missing)
		switch {
		case errors.As(err, &p):
			obs.Problem = p.Message
			return obs, none, nil
		case errors.As(err, new(*frozenError)):
			obs.Waiting = err.Error()
			return obs, none, requeue.After(retry, err.Error())
		case err != nil:
			return obs, none, err
		}
		obs.Indications = ind
		if obs.VolumeSnapshots, err = r.volumeSnapshots(ctx, s.Namespace, obs.Expected); err != nil {
			return obs, none, err
		}
	}
	st := ContentStatus(content.Status, VolumeStatuses(obs), r.Now())
	if !apiequality.Semantic.DeepEqual(st, content.Status) {
		patch := client.MergeFrom(content.DeepCopy())
		content.Status = st
		if err := r.Client.Status().Patch(ctx, content, patch); err != nil {
			return obs, none, fmt.Errorf("update status of vmsnapshotcontent %s: %w", content.Name, err)
		}
	}
	return obs, st, nil
}

// Problem fails a snapshot: what is wrong, for the user.
type Problem struct{ Message string }

func (p *Problem) Error() string { return p.Message }

// frozenError is a failed freeze: the snapshot waits and tries again.
type frozenError struct{ err error }

func (e *frozenError) Error() string { return "freeze the guest's filesystems: " + e.err.Error() }
func (e *frozenError) Unwrap() error { return e.err }

// source is the snapshot's VM, or why it cannot be snapshotted.
func (r *Reconciler) source(ctx context.Context, s *v1.VirtualMachineSnapshot) (*v1.VirtualMachine, string, error) {
	src := s.Spec.Source
	if src.Kind != "VirtualMachine" || (ptr.Deref(src.APIGroup, "") != "" && *src.APIGroup != v1.GroupVersion.Group) {
		return nil, fmt.Sprintf("the source must be a VirtualMachine of apiGroup %s, not %s %s/%s",
			v1.GroupVersion.Group, ptr.Deref(src.APIGroup, ""), src.Kind, src.Name), nil
	}
	vm := &v1.VirtualMachine{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: src.Name}, vm)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Sprintf("VirtualMachine %s does not exist in namespace %s", src.Name, s.Namespace), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("get vm %s/%s: %w", s.Namespace, src.Name, err)
	}
	if s.Status.SourceUID != nil && *s.Status.SourceUID != vm.UID {
		return nil, fmt.Sprintf("VirtualMachine %s was deleted and made again while it was snapshotted", src.Name), nil
	}
	return vm, "", nil
}

// content returns the snapshot's content, making it (with the VM captured now) when missing.
func (r *Reconciler) content(ctx context.Context, s *v1.VirtualMachineSnapshot, vm *v1.VirtualMachine) (*v1.VirtualMachineSnapshotContent, error) {
	c := &v1.VirtualMachineSnapshotContent{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: ContentName(s)}, c)
	if err == nil {
		if c.Spec.VirtualMachineSnapshotName == nil || *c.Spec.VirtualMachineSnapshotName != s.Name {
			return nil, &Problem{Message: fmt.Sprintf("VirtualMachineSnapshotContent %s belongs to another snapshot", c.Name)}
		}
		return c, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get vmsnapshotcontent %s: %w", ContentName(s), err)
	}
	if s.Status.VirtualMachineSnapshotContentName != nil {
		return nil, &Problem{Message: fmt.Sprintf("VirtualMachineSnapshotContent %s was deleted", *s.Status.VirtualMachineSnapshotContentName)}
	}
	included, _ := Volumes(&vm.Spec)
	c = &v1.VirtualMachineSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: ContentName(s), Namespace: s.Namespace, Annotations: map[string]string{AnnSnapshot: s.Name}},
		Spec: v1.VirtualMachineSnapshotContentSpec{
			VirtualMachineSnapshotName: ptr.To(s.Name),
			Source:                     v1.SnapshotContentSource{VirtualMachine: Captured(vm)},
		},
	}
	for _, vol := range included {
		b, err := r.backup(ctx, s, vol)
		if err != nil {
			return nil, err
		}
		c.Spec.VolumeBackups = append(c.Spec.VolumeBackups, b)
	}
	if ptr.Deref(s.Spec.DeletionPolicy, v1.VirtualMachineSnapshotContentDelete) == v1.VirtualMachineSnapshotContentDelete {
		if err := controllerutil.SetControllerReference(s, c, r.Client.Scheme()); err != nil {
			return nil, fmt.Errorf("own vmsnapshotcontent %s: %w", c.Name, err)
		}
	}
	if err := r.Client.Create(ctx, c); err != nil {
		if apierrors.IsInvalid(err) {
			return nil, &Problem{Message: fmt.Sprintf("the API server refused VirtualMachineSnapshotContent %s: %v", c.Name, err)}
		}
		return nil, fmt.Errorf("create vmsnapshotcontent %s: %w", c.Name, err)
	}
	log.FromContext(ctx).Info("created content", "content", c.Name, "volumes", len(c.Spec.VolumeBackups))
	r.Recorder.Eventf(s, c, corev1.EventTypeNormal, "SuccessfulVirtualMachineSnapshotContentCreate", "Create",
		"Successfully created VirtualMachineSnapshotContent %s", c.Name)
	return c, nil
}

// backup captures one volume's PVC; the volume must have a VolumeSnapshotClass.
func (r *Reconciler) backup(ctx context.Context, s *v1.VirtualMachineSnapshot, vol Volume) (v1.VolumeBackup, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: vol.Claim}, pvc); err != nil {
		if apierrors.IsNotFound(err) {
			return v1.VolumeBackup{}, &Problem{Message: fmt.Sprintf("volume %s: PersistentVolumeClaim %s does not exist", vol.Name, vol.Claim)}
		}
		return v1.VolumeBackup{}, fmt.Errorf("get pvc %s/%s: %w", s.Namespace, vol.Claim, err)
	}
	if _, err := r.className(ctx, vol.Name, pvc.Spec.StorageClassName); err != nil {
		return v1.VolumeBackup{}, err
	}
	return v1.VolumeBackup{
		VolumeName: vol.Name,
		PersistentVolumeClaim: v1.SnapshotPersistentVolumeClaim{
			ObjectMeta: v1.SnapshotObjectMeta{Name: pvc.Name, Namespace: pvc.Namespace, UID: pvc.UID, Labels: pvc.Labels},
			Spec: v1.SnapshotPVCSpec{AccessModes: pvc.Spec.AccessModes, StorageClassName: pvc.Spec.StorageClassName,
				VolumeMode: pvc.Spec.VolumeMode, Resources: v1.SnapshotPVCResources{Requests: pvc.Spec.Resources.Requests}},
		},
		VolumeSnapshotName: ptr.To(VolumeSnapshotName(s, vol.Name)),
	}, nil
}

// className is the VolumeSnapshotClass for a claim of the named StorageClass.
func (r *Reconciler) className(ctx context.Context, volume string, storageClass *string) (string, error) {
	if ptr.Deref(storageClass, "") == "" {
		return "", &Problem{Message: fmt.Sprintf("volume %s: its PVC has no StorageClass, so no VolumeSnapshotClass can be chosen", volume)}
	}
	sc := &storagev1.StorageClass{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: *storageClass}, sc); err != nil {
		if apierrors.IsNotFound(err) {
			return "", &Problem{Message: fmt.Sprintf("volume %s: StorageClass %s does not exist", volume, *storageClass)}
		}
		return "", fmt.Errorf("get storage class %s: %w", *storageClass, err)
	}
	var classes snapv1.VolumeSnapshotClassList
	if err := r.Client.List(ctx, &classes); err != nil {
		return "", fmt.Errorf("list volume snapshot classes: %w", err)
	}
	name, err := ClassFor(sc, classes.Items)
	if err != nil {
		return "", &Problem{Message: fmt.Sprintf("volume %s: %v", volume, err)}
	}
	return name, nil
}

// volumeSnapshots gets the named VolumeSnapshots; a missing one is nil.
func (r *Reconciler) volumeSnapshots(ctx context.Context, namespace string, names []string) (map[string]*snapv1.VolumeSnapshot, error) {
	out := map[string]*snapv1.VolumeSnapshot{}
	for _, n := range names {
		vs := &snapv1.VolumeSnapshot{}
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: n}, vs)
		switch {
		case apierrors.IsNotFound(err):
			out[n] = nil
		case err != nil:
			return nil, fmt.Errorf("get volumesnapshot %s/%s: %w", namespace, n, err)
		default:
			out[n] = vs
		}
	}
	return out, nil
}

// createVolumeSnapshots makes the missing VolumeSnapshots. A running guest with an agent is
// frozen first and thawed right after they are made, even when making them fails; should the
// thaw not arrive, the launcher thaws by itself after UnfreezeTimeout.
func (r *Reconciler) createVolumeSnapshots(ctx context.Context, s *v1.VirtualMachineSnapshot, vm *v1.VirtualMachine,
	content *v1.VirtualMachineSnapshotContent, missing []v1.VolumeBackup) ([]v1.Indication, error) {
	classes := map[string]string{}
	for _, b := range missing {
		name, err := r.className(ctx, b.VolumeName, b.PersistentVolumeClaim.Spec.StorageClassName)
		if err != nil {
			return nil, err
		}
		classes[b.VolumeName] = name
	}
	online, agent, err := r.guest(ctx, vm)
	if err != nil {
		return nil, err
	}
	var ind []v1.Indication
	if online {
		ind = append(ind, v1.IndicationOnline, v1.IndicationNoGuestAgent)
	}
	if agent {
		ind[1] = v1.IndicationGuestAgent
		if err := r.Freezer.Freeze(ctx, vm.Namespace, vm.Name, UnfreezeTimeout); err != nil {
			r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, "FreezeFailed", "Freeze", "freeze VM %s: %v", vm.Name, err)
			return nil, &frozenError{err: err}
		}
		log.FromContext(ctx).Info("froze the guest", "vm", vm.Name)
		defer r.thaw(ctx, s, vm)
	}
	for _, b := range missing {
		vs := &snapv1.VolumeSnapshot{
			ObjectMeta: metav1.ObjectMeta{Name: *b.VolumeSnapshotName, Namespace: s.Namespace,
				Annotations: map[string]string{AnnSnapshot: s.Name}},
			Spec: snapv1.VolumeSnapshotSpec{
				Source:                  snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(b.PersistentVolumeClaim.ObjectMeta.Name)},
				VolumeSnapshotClassName: ptr.To(classes[b.VolumeName]),
			},
		}
		if err := controllerutil.SetControllerReference(content, vs, r.Client.Scheme()); err != nil {
			return nil, fmt.Errorf("own volumesnapshot %s: %w", vs.Name, err)
		}
		if err := r.Client.Create(ctx, vs); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create volumesnapshot %s: %w", vs.Name, err)
		}
		log.FromContext(ctx).Info("created VolumeSnapshot", "volumesnapshot", vs.Name, "class", classes[b.VolumeName])
	}
	return ind, nil
}

// thaw unfreezes the guest with a context of its own: the reconcile's may be ending.
func (r *Reconciler) thaw(ctx context.Context, s *v1.VirtualMachineSnapshot, vm *v1.VirtualMachine) {
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), thawTimeout)
	defer cancel()
	if err := r.Freezer.Unfreeze(tctx, vm.Namespace, vm.Name); err != nil {
		r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, "ThawFailed", "Unfreeze",
			"thaw VM %s: %v (the launcher thaws it after %s)", vm.Name, err, UnfreezeTimeout)
		return
	}
	log.FromContext(ctx).Info("thawed the guest", "vm", vm.Name)
}

// guest says whether the VM runs (its VMI exists and has not ended) and whether a guest agent
// is connected to freeze its filesystems with.
func (r *Reconciler) guest(ctx context.Context, vm *v1.VirtualMachine) (online, agent bool, err error) {
	vmi := &v1.VirtualMachineInstance{}
	err = r.Client.Get(ctx, types.NamespacedName{Namespace: vm.Namespace, Name: vm.Name}, vmi)
	if apierrors.IsNotFound(err) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("get vmi %s/%s: %w", vm.Namespace, vm.Name, err)
	}
	if vmi.Status.Phase == v1.Succeeded || vmi.Status.Phase == v1.Failed || !metav1.IsControlledBy(vmi, vm) {
		return false, false, nil
	}
	agent = vmi.Status.Phase == v1.Running && vmi.Status.Condition(v1.VMIAgentConnected).IsTrue()
	return true, agent, nil
}

// writeStatus patches the status when it changed.
func (r *Reconciler) writeStatus(ctx context.Context, s *v1.VirtualMachineSnapshot, st v1.VirtualMachineSnapshotStatus) error {
	if apiequality.Semantic.DeepEqual(st, s.Status) {
		return nil
	}
	old := s.Status.Phase
	patch := client.MergeFrom(s.DeepCopy())
	s.Status = st
	if err := r.Client.Status().Patch(ctx, s, patch); err != nil {
		return fmt.Errorf("update status of vmsnapshot %s: %w", s.Name, err)
	}
	if st.Phase == old {
		return nil
	}
	switch st.Phase {
	case v1.SnapshotSucceeded:
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, "VirtualMachineSnapshotReady", "Reconcile", "VirtualMachineSnapshot %s is ready to use", s.Name)
	case v1.SnapshotFailed:
		r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, "VirtualMachineSnapshotFailed", "Reconcile", "%s", ptr.Deref(st.Error.Message, ""))
	}
	return nil
}

func names(vols []Volume) []string {
	var out []string
	for _, v := range vols {
		out = append(out, v.Name)
	}
	return out
}

func contains(list []v1.Indication, x v1.Indication) bool {
	for _, v := range list {
		if v == x {
			return true
		}
	}
	return false
}
