package certs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// ensureAPIService sets the APIService's caBundle to ca's certificate. An APIService that does
// not exist yet (the chart creates it) is not an error: the next check tries again.
func (m *Manager) ensureAPIService(ctx context.Context, ca *keyPair) error {
	api := m.cfg.Aggregator.ApiregistrationV1().APIServices()
	svc, err := api.Get(ctx, subresources.APIServiceName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if !m.apiServiceMissing {
			m.log.Info("APIService not found; will set its caBundle when it exists", "apiService", subresources.APIServiceName)
			m.apiServiceMissing = true
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get apiservice %s: %w", subresources.APIServiceName, err)
	}
	m.apiServiceMissing = false
	if bytes.Equal(svc.Spec.CABundle, ca.certPEM) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"caBundle": ca.certPEM}})
	if err != nil {
		return fmt.Errorf("encode apiservice patch: %w", err)
	}
	if _, err := api.Patch(ctx, subresources.APIServiceName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch apiservice %s: %w", subresources.APIServiceName, err)
	}
	m.log.Info("set the APIService's caBundle", "apiService", subresources.APIServiceName)
	return nil
}
