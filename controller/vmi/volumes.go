package vmi

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// Reasons the controller cannot make a launcher pod yet.
const (
	ReasonPVCNotFound        = "PVCNotFound"
	ReasonDataVolumeNotReady = "DataVolumeNotReady"
	ReasonDataVolumeNotFound = "DataVolumeNotFound"
	ReasonDataVolumeError    = "DataVolumeError"
	ReasonSecretNotFound     = "SecretNotFound"
	ReasonHostDiskNotAllowed = "HostDiskNotAllowed"
)

// volumeFacts looks up what the pod needs to know of the VMI's PVCs (their volume mode) and
// checks that the Secrets it mounts exist. It reads past the cache, so the controller neither
// caches nor watches every PVC and Secret of the cluster; it runs only until the pod is made.
func (r *Reconciler) volumeFacts(ctx context.Context, vmi *v1.VirtualMachineInstance) (VolumeFacts, *Problem, error) {
	facts := VolumeFacts{Block: map[string]bool{}, ClaimName: map[string]string{}}
	for _, vol := range vmi.Spec.Volumes {
		var problem *Problem
		var err error
		switch {
		case vol.PersistentVolumeClaim != nil:
			problem, err = r.claimFacts(ctx, vmi, vol.Name, vol.PersistentVolumeClaim.ClaimName, false, &facts)
		case vol.Ephemeral != nil:
			problem, err = r.claimFacts(ctx, vmi, vol.Name, vol.Ephemeral.PersistentVolumeClaim.ClaimName, false, &facts)
		case vol.DataVolume != nil:
			problem, err = r.dataVolumeReady(ctx, vmi, vol.Name, vol.DataVolume.Name)
			if err == nil && problem == nil {
				// A DataVolume's PVC has the DataVolume's name (CDI's convention).
				problem, err = r.claimFacts(ctx, vmi, vol.Name, vol.DataVolume.Name, true, &facts)
			}
		case vol.HostDisk != nil:
			problem = hostDiskProblem(r.Pod, vol)
		case vol.CloudInitNoCloud != nil:
			problem, err = r.secretsExist(ctx, vmi, vol.Name, vol.CloudInitNoCloud.UserDataSecretRef, vol.CloudInitNoCloud.NetworkDataSecretRef)
		case vol.CloudInitConfigDrive != nil:
			problem, err = r.secretsExist(ctx, vmi, vol.Name, vol.CloudInitConfigDrive.UserDataSecretRef, vol.CloudInitConfigDrive.NetworkDataSecretRef)
		}
		if err != nil || problem != nil {
			return facts, problem, err
		}
	}
	return facts, nil, nil
}

// hostDiskProblem says why a hostDisk volume cannot be used: hostDisks are turned off, or its
// path is not below a directory the cluster's owner allows.
func hostDiskProblem(cfg PodConfig, vol v1.Volume) *Problem {
	if !cfg.AllowHostDisk {
		return &Problem{ReasonHostDiskNotAllowed, fmt.Sprintf("volume %s: hostDisk volumes are turned off in this cluster (the controller's --allow-host-disk flag)", vol.Name)}
	}
	if _, err := placeHostDisk(vol.HostDisk.Path, cfg.HostDiskDirs); err != nil {
		return &Problem{ReasonHostDiskNotAllowed, fmt.Sprintf("volume %s: %v", vol.Name, err)}
	}
	return nil
}

func (r *Reconciler) claimFacts(ctx context.Context, vmi *v1.VirtualMachineInstance, volume, claim string, dataVolume bool, facts *VolumeFacts) (*Problem, error) {
	var pvc corev1.PersistentVolumeClaim
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vmi.Namespace, Name: claim}, &pvc)
	if apierrors.IsNotFound(err) {
		if dataVolume {
			return &Problem{ReasonDataVolumeNotReady, fmt.Sprintf("volume %s: the PersistentVolumeClaim of DataVolume %s does not exist yet", volume, claim)}, nil
		}
		return &Problem{ReasonPVCNotFound, fmt.Sprintf("volume %s: PersistentVolumeClaim %s not found in namespace %s", volume, claim, vmi.Namespace)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get pvc %s of vmi %s: %w", claim, vmi.Name, err)
	}
	facts.ClaimName[volume] = claim
	facts.Block[volume] = pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock
	return nil, nil
}

// dataVolumeReady says whether a DataVolume can be used: its import is done, or it waits for
// its first consumer (the import then runs on the node the pod is scheduled to).
func (r *Reconciler) dataVolumeReady(ctx context.Context, vmi *v1.VirtualMachineInstance, volume, name string) (*Problem, error) {
	var dv v1.DataVolume
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vmi.Namespace, Name: name}, &dv)
	if apierrors.IsNotFound(err) {
		return &Problem{ReasonDataVolumeNotFound, fmt.Sprintf("volume %s: DataVolume %s not found in namespace %s", volume, name, vmi.Namespace)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get datavolume %s of vmi %s: %w", name, vmi.Name, err)
	}
	switch dv.Status.Phase {
	case v1.DataVolumeSucceeded, v1.DataVolumeWaitForFirstConsumer:
		return nil, nil
	case v1.DataVolumeFailed:
		return &Problem{ReasonDataVolumeError, fmt.Sprintf("volume %s: DataVolume %s failed", volume, name)}, nil
	}
	phase := string(dv.Status.Phase)
	if phase == "" {
		phase = "not started"
	}
	return &Problem{ReasonDataVolumeNotReady, fmt.Sprintf("volume %s: DataVolume %s is %s", volume, name, phase)}, nil
}

func (r *Reconciler) secretsExist(ctx context.Context, vmi *v1.VirtualMachineInstance, volume string, refs ...*corev1.LocalObjectReference) (*Problem, error) {
	for _, ref := range refs {
		if ref == nil {
			continue
		}
		// Metadata only: the controller learns that the Secret exists, never its contents.
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: vmi.Namespace, Name: ref.Name}, meta)
		if apierrors.IsNotFound(err) {
			return &Problem{ReasonSecretNotFound, fmt.Sprintf("volume %s: Secret %s not found in namespace %s", volume, ref.Name, vmi.Namespace)}, nil
		}
		if apierrors.IsForbidden(err) {
			// Without `get` on Secrets the check is skipped; the kubelet then reports a
			// missing Secret as a mount failure of the pod.
			log.FromContext(ctx).V(1).Info("cannot check secret, skipping", "secret", ref.Name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get secret %s of vmi %s: %w", ref.Name, vmi.Name, err)
		}
	}
	return nil, nil
}
