package claim

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// FuzzParseSource: whatever a tenant writes into a PVC's import annotations is either refused
// with an error or becomes a source the importer can act on: an http(s) URL with a host and,
// if any, a checksum it can verify.
func FuzzParseSource(f *testing.F) {
	f.Add("http", "https://example.com/disk.qcow2", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "creds", "ca")
	f.Add("http", "http://169.254.169.254/latest/meta-data/", "", "", "")
	f.Add("http", "file:///etc/shadow", "", "", "")
	f.Add("http", "http:///x", "md5:zz", "", "")
	f.Add("upload", "", "", "", "")
	f.Add("", "", "", "", "")
	f.Add("s3", "s3://bucket/x", "", "", "")
	f.Add("registry", "docker://kubevirt/cirros-container-disk-demo:latest", "", "", "")
	f.Add("registry", "docker://127.0.0.1:5000/a@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "", "", "")
	f.Add("registry", "docker://UPPER/case", "", "", "")
	f.Fuzz(func(t *testing.T, source, endpoint, checksum, secret, cm string) {
		ann := map[string]string{AnnSource: source, AnnEndpoint: endpoint, AnnChecksum: checksum, AnnSecret: secret, AnnCertConfigMap: cm}
		src, err := ParseSource(ann)
		if err != nil {
			if src != nil {
				t.Fatalf("error %v with a source %+v", err, src)
			}
			return
		}
		switch source {
		case "", SourceBlank:
			if src != nil {
				t.Fatalf("blank gave %+v", src)
			}
			return
		case SourceUpload:
			if src == nil || !src.Upload || src.Import != nil {
				t.Fatalf("upload gave %+v", src)
			}
			return
		case SourceRegistry:
			if src == nil || !src.Upload || src.Import != nil || src.Registry == "" || len(src.Registry) > MaxImageLen || strings.Contains(src.Registry, "://") {
				t.Fatalf("registry gave %+v", src)
			}
			if _, err := name.ParseReference(src.Registry); err != nil {
				t.Fatalf("accepted image %q: %v", src.Registry, err)
			}
			return
		case SourceHTTP:
		default:
			t.Fatalf("source %q accepted", source)
		}
		if src == nil || src.Import == nil || src.Upload {
			t.Fatalf("http gave %+v", src)
		}
		u, err := url.Parse(src.Import.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("accepted URL %q", src.Import.URL)
		}
		if src.Import.Checksum != "" {
			if _, _, err := ParseChecksum(src.Import.Checksum); err != nil {
				t.Fatalf("accepted checksum %q: %v", src.Import.Checksum, err)
			}
		}
	})
}
