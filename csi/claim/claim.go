// Package claim is the contract, written as PVC annotations, between whoever asks for a volume's
// content (the DataVolume reconciler, or a user writing a PVC by hand) and slimvirt-csi, which
// fills the volume on its node and reports back on the same PVC.
package claim

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

const (
	// DriverName is slimvirt's CSI driver.
	DriverName = "csi.slimvirt.io"
	// TopologyKey is the topology segment that pins a volume to its node.
	TopologyKey = "topology.csi.slimvirt.io/node"
)

// Requests: set on the PVC before it is provisioned.
const (
	// AnnSource is http, registry, upload or blank (the default).
	AnnSource = "import.slimvirt.io/source"
	// AnnEndpoint is the http(s) URL of the image, or the image reference of a registry source.
	AnnEndpoint = "import.slimvirt.io/endpoint"
	// AnnChecksum is algorithm:hex, e.g. sha256:9f86d0....
	AnnChecksum = "import.slimvirt.io/checksum"
	// AnnSecret names a Secret in the PVC's namespace with basic-auth credentials.
	AnnSecret = "import.slimvirt.io/secret"
	// AnnCertConfigMap names a ConfigMap in the PVC's namespace with CA certificates (PEM).
	AnnCertConfigMap = "import.slimvirt.io/cert-configmap"
)

// Reports: written on the PVC by the driver.
const (
	// AnnPhase is the content phase: Pending, Populating, Ready or Failed.
	AnnPhase    = "import.slimvirt.io/phase"
	AnnProgress = "import.slimvirt.io/progress"
	AnnMessage  = "import.slimvirt.io/message"
	AnnRestarts = "import.slimvirt.io/restarts"
)

// Source kinds.
const (
	SourceHTTP   = "http"
	SourceUpload = "upload"
	SourceBlank  = "blank"
	// SourceRegistry is a containerDisk image's disk: the controller runs the image on the
	// volume's node, and its disk arrives like an upload.
	SourceRegistry = "registry"
)

// Source is the content a PVC's annotations ask for.
type Source struct {
	// Upload means the content arrives through the upload endpoint (also for a registry source).
	Upload bool
	// Registry is the image reference of a registry source; Upload is then set too.
	Registry string
	// Import is an HTTP(S) import.
	Import *Import
}

// Import is an HTTP(S) image to fetch into the volume. slimvirt-csi records it in its state
// under these JSON names.
type Import struct {
	URL      string `json:"url"`
	Checksum string `json:"checksum,omitempty"`
	// SecretRef and CertConfigMap name objects in the claim's namespace.
	SecretRef     string `json:"secretRef,omitempty"`
	CertConfigMap string `json:"certConfigMap,omitempty"`
}

// ParseSource reads the requested content from a PVC's annotations; nil means blank.
func ParseSource(ann map[string]string) (*Source, error) {
	switch ann[AnnSource] {
	case "", SourceBlank:
		return nil, nil
	case SourceUpload:
		return &Source{Upload: true}, nil
	case SourceRegistry:
		ref, err := ParseImage(ann[AnnEndpoint])
		if err != nil {
			return nil, err
		}
		return &Source{Upload: true, Registry: ref}, nil
	case SourceHTTP:
		imp := Import{
			URL:           ann[AnnEndpoint],
			Checksum:      ann[AnnChecksum],
			SecretRef:     ann[AnnSecret],
			CertConfigMap: ann[AnnCertConfigMap],
		}
		if err := imp.Validate(); err != nil {
			return nil, err
		}
		return &Source{Import: &imp}, nil
	default:
		return nil, fmt.Errorf("annotation %s: unknown source %q", AnnSource, ann[AnnSource])
	}
}

// Validate checks an HTTP source: only http and https URLs, and a checksum the importer can
// verify.
func (imp Import) Validate() error {
	u, err := url.Parse(imp.URL)
	if err != nil {
		return fmt.Errorf("import URL %q: %w", imp.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("import URL %q: only http and https are supported", imp.URL)
	}
	if u.Host == "" {
		return fmt.Errorf("import URL %q: no host", imp.URL)
	}
	if imp.Checksum != "" {
		if _, _, err := ParseChecksum(imp.Checksum); err != nil {
			return err
		}
	}
	return nil
}

// MaxImageLen bounds an image reference.
const MaxImageLen = 1024

// ParseImage checks an image reference (docker://<ref> or <ref>, as a container's image is
// written) and returns it without the scheme.
func ParseImage(s string) (string, error) {
	ref := strings.TrimPrefix(s, "docker://")
	if len(ref) > MaxImageLen {
		return "", fmt.Errorf("image reference is %d bytes, more than %d", len(ref), MaxImageLen)
	}
	if _, err := name.ParseReference(ref); err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	return ref, nil
}

// ParseChecksum splits algorithm:hex and checks the digest length.
func ParseChecksum(s string) (algo, hexDigest string, err error) {
	algo, hexDigest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("checksum %q: want algorithm:hex", s)
	}
	want := map[string]int{"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}[strings.ToLower(algo)]
	if want == 0 {
		return "", "", fmt.Errorf("checksum %q: algorithm must be md5, sha1, sha256 or sha512", s)
	}
	if len(hexDigest) != want {
		return "", "", fmt.Errorf("checksum %q: %s digest must be %d hex digits", s, algo, want)
	}
	for _, c := range strings.ToLower(hexDigest) {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return "", "", fmt.Errorf("checksum %q: not hex", s)
		}
	}
	return strings.ToLower(algo), strings.ToLower(hexDigest), nil
}

// Phase is where a volume's content stands.
type Phase string

const (
	// PhaseReady volumes may be published.
	PhaseReady Phase = "Ready"
	// PhasePending volumes wait for their content (an upload that has not started).
	PhasePending Phase = "Pending"
	// PhasePopulating volumes are being filled (import, upload or clone).
	PhasePopulating Phase = "Populating"
	// PhaseFailed volumes could not be filled; they are never published.
	PhaseFailed Phase = "Failed"
)

// Content is the progress of filling a volume, as the driver reports it on the PVC.
// slimvirt-csi records it in its state under these JSON names.
type Content struct {
	Phase    Phase  `json:"phase"`
	Progress string `json:"progress,omitempty"`
	Message  string `json:"message,omitempty"`
	// Restarts counts how often the filling started over (driver restarts, retries).
	Restarts int `json:"restarts,omitempty"`
}

// ReportAnnotations are the annotations the driver writes for a content state.
func ReportAnnotations(c Content) map[string]string {
	return map[string]string{
		AnnPhase:    string(c.Phase),
		AnnProgress: c.Progress,
		AnnMessage:  c.Message,
		AnnRestarts: strconv.Itoa(c.Restarts),
	}
}

// ParseReport reads what the driver reported; ok is false when it has reported nothing yet.
func ParseReport(ann map[string]string) (c Content, ok bool) {
	p, ok := ann[AnnPhase]
	if !ok {
		return Content{}, false
	}
	c.Phase = Phase(p)
	c.Progress = ann[AnnProgress]
	c.Message = ann[AnnMessage]
	c.Restarts, _ = strconv.Atoi(ann[AnnRestarts])
	return c, true
}
