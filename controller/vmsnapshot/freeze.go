package vmsnapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// Freezer freezes and thaws a running VMI's guest filesystems.
type Freezer interface {
	Freeze(ctx context.Context, namespace, name string, unfreezeTimeout time.Duration) error
	Unfreeze(ctx context.Context, namespace, name string) error
}

// APIFreezer calls the aggregated API's freeze and unfreeze subresources through the
// kube-apiserver, with the controller's identity, as KubeVirt's snapshot controller does.
type APIFreezer struct {
	host   string
	client *http.Client
}

// NewAPIFreezer makes a Freezer that reaches the API server of cfg.
func NewAPIFreezer(cfg *rest.Config) (*APIFreezer, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("make an HTTP client for the API server: %w", err)
	}
	return &APIFreezer{host: strings.TrimSuffix(cfg.Host, "/"), client: hc}, nil
}

// Freeze asks for the guest's filesystems to be frozen for at most unfreezeTimeout.
func (f *APIFreezer) Freeze(ctx context.Context, namespace, name string, unfreezeTimeout time.Duration) error {
	body, err := json.Marshal(subresources.FreezeOptions{UnfreezeTimeout: &metav1.Duration{Duration: unfreezeTimeout}})
	if err != nil {
		return fmt.Errorf("encode freeze options: %w", err)
	}
	return f.put(ctx, namespace, name, subresources.Freeze, body)
}

// Unfreeze thaws them.
func (f *APIFreezer) Unfreeze(ctx context.Context, namespace, name string) error {
	return f.put(ctx, namespace, name, subresources.Unfreeze, []byte("{}"))
}

// maxAnswer bounds the error body read from the API server.
const maxAnswer = 64 << 10

func (f *APIFreezer) put(ctx context.Context, namespace, name, sub string, body []byte) error {
	url := f.host + subresources.APIPath(subresources.VMIs, namespace, name, sub)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s VMI %s/%s: %w", sub, namespace, name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s VMI %s/%s: %w", sub, namespace, name, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var st metav1.Status
	if json.Unmarshal(raw, &st) == nil && st.Message != "" {
		return fmt.Errorf("%s VMI %s/%s: %s", sub, namespace, name, st.Message)
	}
	return fmt.Errorf("%s VMI %s/%s: the API server answered %s", sub, namespace, name, resp.Status)
}
