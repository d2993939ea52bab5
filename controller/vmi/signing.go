package vmi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// SchedulingGateSigned holds a launcher pod back from scheduling until the controller has
// signed its interfaces annotation for the pod's UID, which exists only once the pod does. A
// pod that is not scheduled gets no sandbox, so the CNI plugin never sees it unsigned.
const SchedulingGateSigned = "slimvirt.io/interfaces-signed"

// HoldForSignature makes a launcher pod wait for its UID-bound signature: it adds the
// scheduling gate and drops any signature the pod carries (a signature made before the pod
// exists cannot name its UID). BuildPod makes every pod so.
func HoldForSignature(pod *corev1.Pod) {
	delete(pod.Annotations, launcherpod.AnnotationSignature)
	for _, g := range pod.Spec.SchedulingGates {
		if g.Name == SchedulingGateSigned {
			return
		}
	}
	pod.Spec.SchedulingGates = append(pod.Spec.SchedulingGates, corev1.PodSchedulingGate{Name: SchedulingGateSigned})
}

// awaitsSignature says whether the pod still waits for the controller's signature.
func awaitsSignature(pod *corev1.Pod) bool {
	if pod == nil || pod.DeletionTimestamp != nil {
		return false
	}
	for _, g := range pod.Spec.SchedulingGates {
		if g.Name == SchedulingGateSigned {
			return true
		}
	}
	return false
}

// releasePatch is the one patch that signs a launcher pod and lets it be scheduled: it writes
// the interfaces the controller computed from the VMI (whatever the pod's annotation says now:
// a tenant may edit its own pods) with their signature for the pod's UID, and removes the gate
// (the API server allows removing scheduling gates, not adding them).
func releasePatch(key []byte, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) ([]byte, error) {
	value, err := interfacesAnnotation(vmi)
	if err != nil {
		return nil, err
	}
	sig := launcherpod.SignPod(key, launcherpod.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}, value)
	gates := []corev1.PodSchedulingGate{}
	for _, g := range pod.Spec.SchedulingGates {
		if g.Name != SchedulingGateSigned {
			gates = append(gates, g)
		}
	}
	patch := map[string]any{
		"metadata": map[string]any{
			// The UID in the patch makes the API server refuse it for a pod made again under the
			// same name meanwhile.
			"uid": pod.UID,
			"annotations": map[string]string{
				launcherpod.AnnotationInterfaces: value,
				launcherpod.AnnotationSignature:  sig,
			},
		},
		"spec": map[string]any{"schedulingGates": gates},
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("encode signature patch of pod %s: %w", pod.Name, err)
	}
	return b, nil
}

// releasePod signs the pod's interfaces for its UID and lets it be scheduled: one API call.
func (r *Reconciler) releasePod(ctx context.Context, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) (*corev1.Pod, error) {
	patch, err := releasePatch(r.Pod.SigningKey, vmi, pod)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	out := pod.DeepCopy()
	if err := r.Client.Patch(ctx, out, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return nil, fmt.Errorf("sign launcher pod %s: %w", pod.Name, err)
	}
	log.FromContext(ctx).V(1).Info("signed launcher pod", "pod", pod.Name, "uid", pod.UID, "took", time.Since(start))
	return out, nil
}
