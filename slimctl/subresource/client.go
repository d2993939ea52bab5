// Package subresource is a client of slimvirt's aggregated API, subresources.slimvirt.io: the
// websockets of a VMI's serial console and VNC display, the power actions (PUT) and the guest
// agent's answer (GET). It talks to the kube-apiserver with the caller's own kubeconfig
// credentials (bearer tokens, client certificates, exec plugins), so the cluster's RBAC decides
// what a user may do; the kube-apiserver authorizes each request before it proxies it.
package subresource

import (
	"context"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// maxBody bounds what Get reads: the guest agent's answer is the guest's to choose.
const maxBody = 1 << 20

// Client reaches subresources.slimvirt.io through the kube-apiserver.
type Client struct {
	config *rest.Config
	rest   *rest.RESTClient
}

// New returns a client that uses cfg's server and credentials.
func New(cfg *rest.Config) (*Client, error) {
	rc := rest.CopyConfig(cfg)
	rc.GroupVersion = &schema.GroupVersion{Group: subresources.Group, Version: subresources.Version}
	rc.APIPath = "/apis"
	rc.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	if rc.UserAgent == "" {
		rc.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	r, err := rest.RESTClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("make %s client: %w", subresources.Group, err)
	}
	return &Client{config: rc, rest: r}, nil
}

// Put asks for an action, for example Put(ctx, subresources.VMIs, ns, name, subresources.Pause).
func (c *Client) Put(ctx context.Context, resource, namespace, name, sub string) error {
	err := c.rest.Put().AbsPath(subresources.APIPath(resource, namespace, name, sub)).Do(ctx).Error()
	if err != nil {
		return requestError(sub, resource, namespace, name, err)
	}
	return nil
}

// Get returns a subresource's body, for example the guest agent's JSON of
// Get(ctx, subresources.VMIs, ns, name, subresources.GuestOSInfo). It reads at most 1 MiB.
func (c *Client) Get(ctx context.Context, resource, namespace, name, sub string) ([]byte, error) {
	body, err := c.rest.Get().AbsPath(subresources.APIPath(resource, namespace, name, sub)).Stream(ctx)
	if err != nil {
		return nil, requestError(sub, resource, namespace, name, err)
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s %s/%s: read the answer: %w", sub, kindOf(resource), namespace, name, err)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("%s %s %s/%s: the answer is larger than %d bytes", sub, kindOf(resource), namespace, name, maxBody)
	}
	return b, nil
}
