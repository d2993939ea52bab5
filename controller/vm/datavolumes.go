package vm

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// ensureDataVolumes makes the VM's dataVolumeTemplates that do not exist yet and sums up
// whether they can be used.
func (r *Reconciler) ensureDataVolumes(ctx context.Context, vm *v1.VirtualMachine) (Volumes, error) {
	vols := Volumes{Ready: true}
	for _, t := range vm.Spec.DataVolumeTemplates {
		dv := &v1.DataVolume{}
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: vm.Namespace, Name: t.ObjectMeta.Name}, dv)
		if apierrors.IsNotFound(err) {
			dv = newDataVolume(vm, t)
			err := r.Client.Create(ctx, dv)
			if refused(err) {
				// The template makes a DataVolume the API server refuses; trying again would not
				// help until the VM is changed, which reconciles it again.
				vols.Ready, vols.Failed = false, dv.Name
				vols.Refused = &Problem{"FailedDataVolumeCreate", fmt.Sprintf("the API server refused DataVolume %s: %v", dv.Name, err)}
				r.Recorder.Eventf(vm, nil, corev1.EventTypeWarning, "FailedDataVolumeCreate", "CreateDataVolume", "%s", vols.Refused.Message)
				continue
			}
			if client.IgnoreAlreadyExists(err) != nil {
				return vols, fmt.Errorf("create datavolume %s of vm %s: %w", dv.Name, vm.Name, err)
			}
			r.Recorder.Eventf(vm, dv, corev1.EventTypeNormal, "SuccessfulDataVolumeCreate", "CreateDataVolume", "Created DataVolume %s", dv.Name)
			vols.Ready = false
			continue
		}
		if err != nil {
			return vols, fmt.Errorf("get datavolume %s of vm %s: %w", t.ObjectMeta.Name, vm.Name, err)
		}
		switch dv.Status.Phase {
		case v1.DataVolumeSucceeded, v1.DataVolumeWaitForFirstConsumer:
		case v1.DataVolumeFailed:
			vols.Ready, vols.Failed = false, dv.Name
		default:
			vols.Ready = false
		}
	}
	return vols, nil
}

func newDataVolume(vm *v1.VirtualMachine, t v1.DataVolumeTemplateSpec) *v1.DataVolume {
	return &v1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:            t.ObjectMeta.Name,
			Namespace:       vm.Namespace,
			Labels:          t.ObjectMeta.Labels,
			Annotations:     t.ObjectMeta.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: t.Spec.DataVolumeSpec(),
	}
}

// deleteDataVolumes deletes the DataVolumes the VM made, as KubeVirt does when a VM goes.
func (r *Reconciler) deleteDataVolumes(ctx context.Context, vm *v1.VirtualMachine) error {
	for _, t := range vm.Spec.DataVolumeTemplates {
		dv := &v1.DataVolume{}
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: vm.Namespace, Name: t.ObjectMeta.Name}, dv)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get datavolume %s of vm %s: %w", t.ObjectMeta.Name, vm.Name, err)
		}
		if !metav1.IsControlledBy(dv, vm) || dv.DeletionTimestamp != nil {
			continue
		}
		if err := r.Client.Delete(ctx, dv, client.Preconditions{UID: &dv.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete datavolume %s of vm %s: %w", dv.Name, vm.Name, err)
		}
	}
	return nil
}

// refused says whether the API server refused an object for what it is, so the same object
// would be refused again.
func refused(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}
