// Package subresources is the contract of slimvirt's aggregated API, subresources.slimvirt.io,
// and of the node agent's VMI access endpoint that the aggregated server calls. The paths and
// websocket protocols follow KubeVirt's subresources.kubevirt.io, so a tool written for KubeVirt
// needs only the group changed. The kube-apiserver authorizes each request before it is proxied
// (verb get for console, vnc and guestosinfo; update for PUT actions; create for POST), and the
// aggregated server checks again with a SubjectAccessReview.
package subresources

import (
	"path"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The aggregated API.
const (
	Group   = "subresources.slimvirt.io"
	Version = "v1alpha1"
	// APIServiceName is the APIService object that registers the group with the aggregator.
	APIServiceName = Version + "." + Group
	// ServiceName is the Service in the release's namespace that fronts the aggregated server.
	ServiceName = "slimvirt-subresources"
)

// Resources the subresources hang off (the plural names of slimvirt.io's kinds).
const (
	VMIs        = "virtualmachineinstances"
	VMs         = "virtualmachines"
	DataVolumes = "datavolumes"
)

// Subresources of virtualmachineinstances.
const (
	Console     = "console"     // GET, websocket: the serial console's bytes both ways
	VNC         = "vnc"         // GET, websocket: RFB both ways
	Pause       = "pause"       // PUT
	Unpause     = "unpause"     // PUT
	SoftReboot  = "softreboot"  // PUT: ACPI reboot of the guest
	GuestOSInfo = "guestosinfo" // GET: the guest agent's answer as JSON (launcherpod.GuestInfo)
	// Freeze freezes the guest's filesystems through its agent (PUT, body FreezeOptions); the
	// launcher thaws them by itself after the unfreeze timeout.
	Freeze   = "freeze"
	Unfreeze = "unfreeze" // PUT: thaw them
)

// FreezeOptions is the body of a freeze request, as KubeVirt's FreezeUnfreezeTimeout.
type FreezeOptions struct {
	// UnfreezeTimeout is how long the guest stays frozen at most; DefaultUnfreezeTimeout when
	// unset or 0, never more than MaxUnfreezeTimeout.
	UnfreezeTimeout *metav1.Duration `json:"unfreezeTimeout,omitempty"`
}

// The bounds of a freeze: a frozen guest cannot write, so it never stays so for long.
const (
	DefaultUnfreezeTimeout = 5 * time.Minute
	MaxUnfreezeTimeout     = 10 * time.Minute
)

// Subresources of virtualmachines.
const (
	Start   = "start"   // PUT
	Stop    = "stop"    // PUT
	Restart = "restart" // PUT
	Migrate = "migrate" // PUT
)

// UploadToken is the subresource of datavolumes that issues an upload token: POST, answered
// with an UploadTokenResponse.
const UploadToken = "uploadtoken"

// The upload endpoint as the chart publishes it in slimvirt's namespace: the Service in front
// of every node's endpoint, and the ConfigMap (key ca.crt) its certificate chains to.
const (
	UploadService     = "slimvirt-upload"
	UploadCAConfigMap = "slimvirt-upload-ca"
	UploadCAKey       = "ca.crt"
)

// PlainProtocol is KubeVirt's websocket subprotocol for console and VNC: binary messages carry
// the stream's bytes as they are. BinaryProtocol is noVNC's name for the same framing; the
// servers accept either, and a client that offers none.
const (
	PlainProtocol  = "plain.kubevirt.io"
	BinaryProtocol = "binary"
)

// APIPath is the path of a subresource in the aggregated API, for example
// /apis/subresources.slimvirt.io/v1alpha1/namespaces/NS/virtualmachineinstances/NAME/vnc.
func APIPath(resource, namespace, name, subresource string) string {
	return path.Join("/apis", Group, Version, "namespaces", namespace, resource, name, subresource)
}

// The node agent's VMI access endpoint: HTTPS on each node's InternalIP (the agent uses the
// host network), mutual TLS with certificates of the controller's CA. Only the aggregated
// server is a client. Paths are NodePath(namespace, vmi, action) with action one of the VMI
// subresources above; console and vnc are websockets (PlainProtocol), the power actions PUT,
// guestosinfo GET.
const (
	// DefaultNodePort is the endpoint's port unless the chart says otherwise.
	DefaultNodePort = 8186
	// NodeServerName is the DNS name in the node agent's serving certificate; the aggregated
	// server verifies that name whatever address it dialled.
	NodeServerName = "slimvirt-node-agent"
	// APIClientName is the common name of the aggregated server's client certificate: the only
	// client the node agent serves.
	APIClientName = "slimvirt-subresources"
)

// NodePath is the node agent endpoint's path for an action on a VMI.
func NodePath(namespace, vmi, action string) string {
	return path.Join("/v1alpha1/namespaces", namespace, VMIs, vmi, action)
}

// What the controller keeps in its namespace for the certificates it makes and rotates.
const (
	// CASecret holds the CA (tls.crt, tls.key) that signs the aggregated server's serving and
	// client certificates and the node agents' serving certificate. Only the controller reads it.
	CASecret = "slimvirt-ca"
	// NodeAccessSecret holds the node agents' serving certificate (tls.crt, tls.key) and the
	// CA's certificate (ca.crt) they verify clients with; the node agent mounts it.
	NodeAccessSecret = "slimvirt-node-access-tls"
)

// Upload tokens: signed by the controller with an Ed25519 key, verified by the upload endpoint
// with the public half. The endpoint never sees a user's Kubernetes credentials.
const (
	// UploadTokenKeySecret holds the private key (key "ed25519.key", PKCS#8 PEM); only the
	// controller reads it.
	UploadTokenKeySecret = "slimvirt-upload-token-key"
	// UploadTokenPublicConfigMap holds the public key (key "ed25519.pub", PKIX PEM).
	UploadTokenPublicConfigMap = "slimvirt-upload-token-key"
	// UploadTokenHeader carries the token to the upload endpoint ("Authorization: Bearer" is
	// accepted too).
	UploadTokenHeader = "Authorization"
)

// UploadTokenResponse is the body of the answer to a POST on datavolumes/NAME/uploadtoken.
type UploadTokenResponse struct {
	// Token is opaque to clients; it is good for uploads into this one DataVolume until Expires.
	Token string `json:"token"`
	// Expires is when the upload endpoint stops taking the token (RFC 3339).
	Expires string `json:"expires"`
}
