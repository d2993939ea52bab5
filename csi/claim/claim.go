// Package claim is the contract, written as PVC annotations, between whoever asks for a volume's
// content (the DataVolume reconciler, or a user writing a PVC by hand) and slimvirt-csi, which
// fills the volume on its node and reports back on the same PVC.
package claim

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/slimvirt/slimvirt/csi/state"
)

const (
	// DriverName is slimvirt's CSI driver.
	DriverName = "csi.slimvirt.io"
	// TopologyKey is the topology segment that pins a volume to its node.
	TopologyKey = "topology.csi.slimvirt.io/node"
)

// Requests: set on the PVC before it is provisioned.
const (
	// AnnSource is http, upload or blank (the default).
	AnnSource = "import.slimvirt.io/source"
	// AnnEndpoint is the http(s) URL of the image.
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
)

// ParseSource reads the requested content from a PVC's annotations; nil means blank.
func ParseSource(ann map[string]string) (*state.Source, error) {
	switch ann[AnnSource] {
	case "", SourceBlank:
		return nil, nil
	case SourceUpload:
		return &state.Source{Upload: true}, nil
	case SourceHTTP:
		imp := state.Import{
			URL:           ann[AnnEndpoint],
			Checksum:      ann[AnnChecksum],
			SecretRef:     ann[AnnSecret],
			CertConfigMap: ann[AnnCertConfigMap],
		}
		if err := ValidateImport(imp); err != nil {
			return nil, err
		}
		return &state.Source{Import: &imp}, nil
	default:
		return nil, fmt.Errorf("annotation %s: unknown source %q", AnnSource, ann[AnnSource])
	}
}

// ValidateImport checks an HTTP source: only http and https URLs, and a checksum the importer
// can verify.
func ValidateImport(imp state.Import) error {
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

// ReportAnnotations are the annotations the driver writes for a content state.
func ReportAnnotations(c state.Content) map[string]string {
	return map[string]string{
		AnnPhase:    string(c.Phase),
		AnnProgress: c.Progress,
		AnnMessage:  c.Message,
		AnnRestarts: strconv.Itoa(c.Restarts),
	}
}

// ParseReport reads what the driver reported; ok is false when it has reported nothing yet.
func ParseReport(ann map[string]string) (c state.Content, ok bool) {
	p, ok := ann[AnnPhase]
	if !ok {
		return state.Content{}, false
	}
	c.Phase = state.Phase(p)
	c.Progress = ann[AnnProgress]
	c.Message = ann[AnnMessage]
	c.Restarts, _ = strconv.Atoi(ann[AnnRestarts])
	return c, true
}
