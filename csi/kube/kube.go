// Package kube is slimvirt-csi's Kubernetes access: it reads what a PVC asks to be filled with,
// reports fill progress on the PVC, and reads import credentials and CA bundles.
package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/slimvirt/slimvirt/csi/claim"
	"github.com/slimvirt/slimvirt/csi/state"
)

// Cluster implements driver.Cluster with a clientset.
type Cluster struct {
	cs kubernetes.Interface
}

// New wraps a clientset.
func New(cs kubernetes.Interface) *Cluster { return &Cluster{cs: cs} }

// Clientset returns the client, for the upload endpoint's reviews.
func (c *Cluster) Clientset() kubernetes.Interface { return c.cs }

func (c *Cluster) ClaimSource(ctx context.Context, namespace, name string) (*state.Source, error) {
	pvc, err := c.cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get PVC %s/%s: %w", namespace, name, err)
	}
	src, err := claim.ParseSource(pvc.Annotations)
	if err != nil {
		return nil, fmt.Errorf("PVC %s/%s: %w", namespace, name, err)
	}
	return src, nil
}

func (c *Cluster) ReportContent(ctx context.Context, namespace, name string, content state.Content) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": claim.ReportAnnotations(content)}})
	if err != nil {
		return fmt.Errorf("encode PVC patch: %w", err)
	}
	if _, err := c.cs.CoreV1().PersistentVolumeClaims(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch PVC %s/%s: %w", namespace, name, err)
	}
	return nil
}

func (c *Cluster) BasicAuth(ctx context.Context, namespace, secret string) (string, string, error) {
	s, err := c.cs.CoreV1().Secrets(namespace).Get(ctx, secret, metav1.GetOptions{})
	if err != nil {
		return "", "", fmt.Errorf("get secret %s/%s: %w", namespace, secret, err)
	}
	// CDI's keys first, so a CDI secret works unchanged.
	for _, keys := range [][2]string{{"accessKeyId", "secretKey"}, {"username", "password"}} {
		if u, ok := s.Data[keys[0]]; ok {
			return string(u), string(s.Data[keys[1]]), nil
		}
	}
	return "", "", fmt.Errorf("secret %s/%s has neither accessKeyId/secretKey nor username/password", namespace, secret)
}

func (c *Cluster) CABundle(ctx context.Context, namespace, configMap string) ([]byte, error) {
	cm, err := c.cs.CoreV1().ConfigMaps(namespace).Get(ctx, configMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get configmap %s/%s: %w", namespace, configMap, err)
	}
	keys := make([]string, 0, len(cm.Data))
	for k := range cm.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var pem []byte
	for _, k := range keys {
		pem = append(pem, cm.Data[k]...)
		pem = append(pem, '\n')
	}
	return pem, nil
}
