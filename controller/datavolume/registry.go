package datavolume

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/csi/claim"
)

// A registry DataVolume's disk comes from an importer pod: the image itself, run on the node
// that holds the volume (so that node's container runtime pulls it, with the node's
// credentials and mirrors), with slimvirt's copier from the node's seed as its command. The
// copier sends the image's disk to the upload endpoint with an upload token of the DataVolume,
// and the driver reads it as any upload: the format from the bytes, qcow2 checked. The pod runs
// in slimvirt's namespace, where tenants make no pods.
const (
	// ImporterTokenTTL is how long an importer's upload token is good for: long enough for a
	// slow pull; the endpoint checks it when the upload starts.
	ImporterTokenTTL = time.Hour
	// labelImporterFor marks importer pods with a hash of their DataVolume's namespace/name.
	labelImporterFor = "import.slimvirt.io/for"
	// annImporterFor is the DataVolume's namespace/name on its importer pod.
	annImporterFor = "import.slimvirt.io/datavolume"
	// annImporterRuns counts, on the PVC, the importer pods that failed.
	annImporterRuns = "import.slimvirt.io/importer-failures"
	// annImporterRefused holds, on the PVC, why the image can never be imported.
	annImporterRefused = "import.slimvirt.io/importer-refused"
	// maxImporterFailures importer pods may fail before the DataVolume does.
	maxImporterFailures = 3
	tokenKey            = "token"
)

// TokenIssuer signs upload tokens for a DataVolume.
type TokenIssuer interface {
	Issue(ctx context.Context, namespace, dataVolume string, uid types.UID) (string, time.Time, error)
}

// LazyIssuer makes its issuer on first use (the signing key is made or read then) and keeps it.
type LazyIssuer struct {
	New func(ctx context.Context) (TokenIssuer, error)
	mu  sync.Mutex
	it  TokenIssuer
}

// Issue signs a token with the issuer, made on first use.
func (l *LazyIssuer) Issue(ctx context.Context, namespace, dataVolume string, uid types.UID) (string, time.Time, error) {
	l.mu.Lock()
	if l.it == nil {
		it, err := l.New(ctx)
		if err != nil {
			l.mu.Unlock()
			return "", time.Time{}, err
		}
		l.it = it
	}
	it := l.it
	l.mu.Unlock()
	return it.Issue(ctx, namespace, dataVolume, uid)
}

// importers runs registry DataVolumes' importer pods.
type importers struct {
	client client.Client
	// reader gets the upload Service past the cache (the controller may get that one only).
	reader    client.Reader
	namespace string
	tokens    TokenIssuer
}

func importerFor(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return hex.EncodeToString(sum[:20])
}

func importerName(pvc *corev1.PersistentVolumeClaim) string {
	return "slimvirt-importer-" + string(pvc.UID)
}

// sync runs the importer pod of a registry DataVolume while its volume waits for the disk, and
// removes it once the volume is filled or failed. wait says what the import waits for; a
// Problem fails the DataVolume.
func (im *importers) sync(ctx context.Context, dv *v1.DataVolume, pvc *corev1.PersistentVolumeClaim) (wait, problem *Problem, err error) {
	if im.namespace == "" || im.tokens == nil {
		return nil, &Problem{Reason: "ImportUnavailable", Message: "this controller runs no registry imports (no namespace or upload token key)"}, nil
	}
	report, _ := claim.ParseReport(pvc.Annotations)
	if report.Phase == claim.PhaseReady || report.Phase == claim.PhaseFailed {
		return nil, nil, im.cleanup(ctx, dv.Namespace, dv.Name, "")
	}
	if err := im.cleanup(ctx, dv.Namespace, dv.Name, importerName(pvc)); err != nil {
		return nil, nil, err
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return nil, nil, nil
	}
	var pv corev1.PersistentVolume
	if err := im.client.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, &pv); err != nil {
		return nil, nil, client.IgnoreNotFound(err)
	}
	node := claim.NodeOf(&pv)
	if node == "" {
		return nil, &Problem{Reason: "ImportUnavailable", Message: "volume " + pv.Name + " is not pinned to a node"}, nil
	}
	image := pvc.Annotations[claim.AnnEndpoint]
	if msg := pvc.Annotations[annImporterRefused]; msg != "" {
		return nil, &Problem{Reason: "ImportFailed", Message: msg}, im.cleanup(ctx, dv.Namespace, dv.Name, "")
	}
	failures, _ := strconv.Atoi(pvc.Annotations[annImporterRuns])
	pod := &corev1.Pod{}
	err = im.client.Get(ctx, types.NamespacedName{Namespace: im.namespace, Name: importerName(pvc)}, pod)
	switch {
	case apierrors.IsNotFound(err):
		if failures >= maxImporterFailures {
			return nil, &Problem{Reason: "ImportFailed", Message: fmt.Sprintf("the importer of image %s failed %d times", image, failures)}, nil
		}
		if err := im.start(ctx, dv, pvc, node, image); err != nil {
			return nil, nil, err
		}
		return &Problem{Reason: "ImportScheduled", Message: fmt.Sprintf("pulling image %s on node %s", image, node)}, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("get importer pod %s: %w", importerName(pvc), err)
	}
	return im.observe(ctx, pvc, pod, image, node, failures)
}

// observe turns the importer pod's state into the DataVolume's.
func (im *importers) observe(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pod *corev1.Pod, image, node string, failures int) (wait, problem *Problem, err error) {
	if pod.Status.Phase == corev1.PodFailed {
		msg := "the importer pod failed: " + pod.Status.Reason + " " + pod.Status.Message
		code := int32(0)
		for _, cs := range pod.Status.ContainerStatuses {
			if t := cs.State.Terminated; t != nil {
				code = t.ExitCode
				msg = strings.TrimSpace(t.Message)
				if msg == "" {
					msg = fmt.Sprintf("the importer exited with %d (%s)", t.ExitCode, t.Reason)
				}
			}
		}
		if code == launcherpod.ImporterExitRefused {
			return im.refuse(ctx, pvc, pod, fmt.Sprintf("image %s: %s", image, msg))
		}
		// Counted before the pod goes: the next pod is made with a fresh token.
		patch := client.MergeFrom(pvc.DeepCopy())
		metav1.SetMetaDataAnnotation(&pvc.ObjectMeta, annImporterRuns, strconv.Itoa(failures+1))
		if err := im.client.Patch(ctx, pvc, patch); err != nil {
			return nil, nil, fmt.Errorf("count the importer failure on PVC %s: %w", pvc.Name, err)
		}
		log.FromContext(ctx).Info("importer pod failed; running another", "pod", pod.Name, "failures", failures+1, "message", msg)
		if err := im.delete(ctx, pod); err != nil {
			return nil, nil, err
		}
		return &Problem{Reason: "ImportRetrying", Message: "the importer failed, running it again: " + msg}, nil, nil
	}
	for _, cs := range pod.Status.ContainerStatuses {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		switch w.Reason {
		case "InvalidImageName", "ErrImageNeverPull":
			return im.refuse(ctx, pvc, pod, fmt.Sprintf("image %s: %s: %s", image, w.Reason, w.Message))
		case "ErrImagePull", "ImagePullBackOff":
			return &Problem{Reason: "ImagePullFailed", Message: fmt.Sprintf("pulling image %s on node %s: %s: %s", image, node, w.Reason, w.Message)}, nil, nil
		}
	}
	if pod.Status.Phase == corev1.PodRunning || pod.Status.Phase == corev1.PodSucceeded {
		return &Problem{Reason: "ImportInProgress", Message: fmt.Sprintf("copying the disk of image %s on node %s", image, node)}, nil, nil
	}
	return &Problem{Reason: "ImportScheduled", Message: fmt.Sprintf("pulling image %s on node %s", image, node)}, nil, nil
}

// refuse fails the import for good: the reason stays on the PVC, so no importer runs again.
func (im *importers) refuse(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pod *corev1.Pod, msg string) (wait, problem *Problem, err error) {
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	patch := client.MergeFrom(pvc.DeepCopy())
	metav1.SetMetaDataAnnotation(&pvc.ObjectMeta, annImporterRefused, msg)
	if err := im.client.Patch(ctx, pvc, patch); err != nil {
		return nil, nil, fmt.Errorf("record the refused import on PVC %s: %w", pvc.Name, err)
	}
	return nil, &Problem{Reason: "ImportFailed", Message: msg}, im.delete(ctx, pod)
}

// start makes the importer pod and then its token Secret, owned by the pod so that they go
// together; the kubelet holds the pod until the Secret exists.
func (im *importers) start(ctx context.Context, dv *v1.DataVolume, pvc *corev1.PersistentVolumeClaim, node, image string) error {
	var svc corev1.Service
	if err := im.reader.Get(ctx, types.NamespacedName{Namespace: im.namespace, Name: subresources.UploadService}, &svc); err != nil {
		return fmt.Errorf("get the upload endpoint's Service %s/%s: %w", im.namespace, subresources.UploadService, err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return fmt.Errorf("the upload endpoint's Service %s/%s has no cluster IP", im.namespace, subresources.UploadService)
	}
	pod := importerPod(im.namespace, dv, pvc, node, image, "https://"+svc.Spec.ClusterIP)
	if err := im.client.Create(ctx, pod); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create importer pod %s: %w", pod.Name, err)
		}
		// Made by an earlier pass the cache has not shown yet: make sure its Secret exists.
		if err := im.reader.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return fmt.Errorf("get importer pod %s: %w", pod.Name, err)
		}
	}
	tok, _, err := im.tokens.Issue(ctx, dv.Namespace, dv.Name, dv.UID)
	if err != nil {
		return errors.Join(fmt.Errorf("issue the importer's upload token: %w", err), im.delete(ctx, pod))
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: im.namespace, Labels: pod.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}}},
		Data: map[string][]byte{tokenKey: []byte(tok)},
	}
	if err := im.client.Create(ctx, sec); err != nil && !apierrors.IsAlreadyExists(err) {
		return errors.Join(fmt.Errorf("create the importer's token Secret %s: %w", sec.Name, err), im.delete(ctx, pod))
	}
	log.FromContext(ctx).Info("started importer pod", "pod", pod.Name, "image", image, "node", node)
	return nil
}

// importerPod is the image run as the disk's sender: no account token, no capability, the
// launcher's unprivileged user, a read-only root; only the node's seed (the copier), the token
// and the endpoint's CA are mounted.
func importerPod(ns string, dv *v1.DataVolume, pvc *corev1.PersistentVolumeClaim, node, image, endpoint string) *corev1.Pod {
	name := importerName(pvc)
	const secretDir, caDir = "/var/run/slimvirt-import/token", "/var/run/slimvirt-import/ca"
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{labelImporterFor: importerFor(dv.Namespace, dv.Name), launcherpod.LabelApp: launcherpod.AppImporter,
				"app.kubernetes.io/managed-by": "slimvirt"},
			Annotations: map[string]string{annImporterFor: dv.Namespace + "/" + dv.Name},
		},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: ptr.To[int64](launcherpod.LauncherUID), RunAsGroup: ptr.To[int64](launcherpod.LauncherGID), RunAsNonRoot: ptr.To(true),
				// The token Secret's files (0440) are the group's.
				FSGroup:        ptr.To[int64](launcherpod.LauncherGID),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "importer",
				Image: image,
				Command: []string{launcherpod.ContainerDiskCopier, "send",
					"--url", endpoint, "--server-name", subresources.UploadService + "." + ns + ".svc",
					"--namespace", dv.Namespace, "--name", dv.Name,
					"--token-file", secretDir + "/" + tokenKey, "--ca-file", caDir + "/" + subresources.UploadCAKey},
				VolumeMounts: []corev1.VolumeMount{{Name: "token", MountPath: secretDir, ReadOnly: true}, {Name: "ca", MountPath: caDir, ReadOnly: true}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi"), launcherpod.ResourceSeed: resource.MustParse("1")},
				},
				SecurityContext: &corev1.SecurityContext{
					Privileged: ptr.To(false), AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: []corev1.Volume{
				{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name, DefaultMode: ptr.To[int32](0o440)}}},
				{Name: "ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: subresources.UploadCAConfigMap}}}},
			},
		},
	}
}

// cleanup deletes the DataVolume's importer pods but keep (their Secrets go with them).
func (im *importers) cleanup(ctx context.Context, namespace, name, keep string) error {
	if im.namespace == "" {
		return nil
	}
	var pods corev1.PodList
	if err := im.client.List(ctx, &pods, client.InNamespace(im.namespace), client.MatchingLabels{labelImporterFor: importerFor(namespace, name)}); err != nil {
		return fmt.Errorf("list importer pods of %s/%s: %w", namespace, name, err)
	}
	var errs []error
	for i := range pods.Items {
		if pods.Items[i].Name != keep && pods.Items[i].Annotations[annImporterFor] == namespace+"/"+name {
			errs = append(errs, im.delete(ctx, &pods.Items[i]))
		}
	}
	return errors.Join(errs...)
}

func (im *importers) delete(ctx context.Context, pod *corev1.Pod) error {
	if err := im.client.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete importer pod %s: %w", pod.Name, err)
	}
	return nil
}

// dataVolumeOfImporter maps an importer pod's events to its DataVolume.
func dataVolumeOfImporter(_ context.Context, o client.Object) []reconcile.Request {
	ns, name, ok := strings.Cut(o.GetAnnotations()[annImporterFor], "/")
	if !ok || o.GetLabels()[labelImporterFor] != importerFor(ns, name) {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
}
