// Package kube is slimvirt-csi's Kubernetes access: it reads what a PVC asks to be filled with,
// reports fill progress on the PVC, and reads a PVC's import credentials. Those are never read
// from the tenant's namespace: the controller copies them into a per-volume Secret in slimvirt's
// own namespace (package importsecret), found from the PVC's UID, so the node's account needs
// `get` on Secrets of that namespace only.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/importer"
	"github.com/slimvirt/slimvirt/csi/kube/importsecret"
)

// Cluster implements driver.Cluster with a clientset.
type Cluster struct {
	cs kubernetes.Interface
	// namespace holds the per-volume import Secrets: slimvirt's release namespace.
	namespace string
}

// New wraps a clientset; import credentials are read from the pod's own namespace (the
// POD_NAMESPACE environment variable, else the service account's namespace file).
func New(cs kubernetes.Interface) *Cluster { return NewInNamespace(cs, importsecret.PodNamespace()) }

// NewInNamespace wraps a clientset that reads import credentials from namespace.
func NewInNamespace(cs kubernetes.Interface, namespace string) *Cluster {
	return &Cluster{cs: cs, namespace: namespace}
}

// Clientset returns the client, for the upload endpoint's reviews.
func (c *Cluster) Clientset() kubernetes.Interface { return c.cs }

// ClaimSource reads a PVC's source. An import with credentials waits (an error, which the
// provisioner retries) until the controller has made the PVC's per-volume Secret; the source
// then names that Secret, never a tenant's object.
func (c *Cluster) ClaimSource(ctx context.Context, namespace, name string) (*claim.Source, error) {
	pvc, err := c.cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get PVC %s/%s: %w", namespace, name, err)
	}
	src, err := claim.ParseSource(pvc.Annotations)
	if err != nil {
		return nil, fmt.Errorf("PVC %s/%s: %w", namespace, name, err)
	}
	if src == nil || src.Import == nil || src.Import.SecretRef == "" && src.Import.CertConfigMap == "" {
		return src, nil
	}
	s, err := c.importSecret(ctx, namespace, pvc.UID)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("PVC %s/%s: its import credentials are not ready: the slimvirt controller copies them into Secret %s/%s before the import starts: %w",
			namespace, name, c.namespace, importsecret.Name(pvc.UID), err)
	}
	if err != nil {
		return nil, fmt.Errorf("PVC %s/%s: %w", namespace, name, err)
	}
	if src.Import.SecretRef != "" {
		if _, ok := s.Data[importsecret.KeyUser]; !ok {
			return nil, fmt.Errorf("PVC %s/%s: Secret %s/%s has no credentials", namespace, name, c.namespace, s.Name)
		}
		src.Import.SecretRef = s.Name
	}
	if src.Import.CertConfigMap != "" {
		if _, ok := s.Data[importsecret.KeyCA]; !ok {
			return nil, fmt.Errorf("PVC %s/%s: Secret %s/%s has no CA bundle", namespace, name, c.namespace, s.Name)
		}
		src.Import.CertConfigMap = s.Name
	}
	return src, nil
}

// importSecret reads the per-volume Secret of the PVC with this UID and checks that the
// controller made it for that PVC.
func (c *Cluster) importSecret(ctx context.Context, namespace string, uid types.UID) (*corev1.Secret, error) {
	if c.namespace == "" {
		return nil, &importer.PermanentError{Err: errors.New("import credentials need the driver's namespace (POD_NAMESPACE)")}
	}
	s, err := c.cs.CoreV1().Secrets(c.namespace).Get(ctx, importsecret.Name(uid), metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get secret %s/%s: %w", c.namespace, importsecret.Name(uid), err)
	}
	if err := importsecret.Check(s, namespace, uid); err != nil {
		return nil, &importer.PermanentError{Err: err}
	}
	return s, nil
}

func (c *Cluster) ReportContent(ctx context.Context, namespace, name string, content claim.Content) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": claim.ReportAnnotations(content)}})
	if err != nil {
		return fmt.Errorf("encode PVC patch: %w", err)
	}
	if _, err := c.cs.CoreV1().PersistentVolumeClaims(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch PVC %s/%s: %w", namespace, name, err)
	}
	return nil
}

// BasicAuth reads the credentials of a volume of a PVC in namespace from its per-volume Secret;
// secret must be that Secret's name (as ClaimSource put it in the source).
func (c *Cluster) BasicAuth(ctx context.Context, namespace, secret string) (string, string, error) {
	s, err := c.perVolume(ctx, namespace, secret)
	if err != nil {
		return "", "", err
	}
	u, ok := s.Data[importsecret.KeyUser]
	if !ok {
		return "", "", &importer.PermanentError{Err: fmt.Errorf("secret %s/%s has no credentials", c.namespace, secret)}
	}
	return string(u), string(s.Data[importsecret.KeyPassword]), nil
}

// CABundle reads the CA certificates of a volume of a PVC in namespace from its per-volume
// Secret; configMap must be that Secret's name.
func (c *Cluster) CABundle(ctx context.Context, namespace, configMap string) ([]byte, error) {
	s, err := c.perVolume(ctx, namespace, configMap)
	if err != nil {
		return nil, err
	}
	pem, ok := s.Data[importsecret.KeyCA]
	if !ok {
		return nil, &importer.PermanentError{Err: fmt.Errorf("secret %s/%s has no CA bundle", c.namespace, configMap)}
	}
	return pem, nil
}

// perVolume refuses any name but a per-volume Secret's: a volume recorded before credentials
// were copied names the tenant's Secret, which the node no longer reads.
func (c *Cluster) perVolume(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	uid, err := importsecret.UIDOf(name)
	if err != nil {
		return nil, &importer.PermanentError{Err: fmt.Errorf("import credentials: %w; recreate the DataVolume", err)}
	}
	return c.importSecret(ctx, namespace, uid)
}
