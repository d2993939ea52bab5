package claim

import (
	"strings"
	"testing"
)

func TestParseSource(t *testing.T) {
	sha := "sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		name    string
		ann     map[string]string
		want    *Source
		wantErr string
	}{
		{"none is blank", nil, nil, ""},
		{"blank", map[string]string{AnnSource: "blank"}, nil, ""},
		{"upload", map[string]string{AnnSource: "upload"}, &Source{Upload: true}, ""},
		{"http", map[string]string{AnnSource: "http", AnnEndpoint: "https://example.com/f.qcow2", AnnChecksum: sha, AnnSecret: "s", AnnCertConfigMap: "c"},
			&Source{Import: &Import{URL: "https://example.com/f.qcow2", Checksum: sha, SecretRef: "s", CertConfigMap: "c"}}, ""},
		{"file URL refused", map[string]string{AnnSource: "http", AnnEndpoint: "file:///etc/shadow"}, nil, "only http and https"},
		{"no host", map[string]string{AnnSource: "http", AnnEndpoint: "http:///x"}, nil, "no host"},
		{"bad checksum algorithm", map[string]string{AnnSource: "http", AnnEndpoint: "http://h/x", AnnChecksum: "crc32:00"}, nil, "algorithm"},
		{"short digest", map[string]string{AnnSource: "http", AnnEndpoint: "http://h/x", AnnChecksum: "sha256:abc"}, nil, "64 hex"},
		{"not hex", map[string]string{AnnSource: "http", AnnEndpoint: "http://h/x", AnnChecksum: "md5:" + strings.Repeat("z", 32)}, nil, "not hex"},
		{"registry", map[string]string{AnnSource: "registry", AnnEndpoint: "docker://kubevirt/cirros-container-disk-demo:latest"}, &Source{Upload: true, Registry: "kubevirt/cirros-container-disk-demo:latest"}, ""},
		{"registry without scheme", map[string]string{AnnSource: "registry", AnnEndpoint: "quay.io/containerdisks/fedora:41"}, &Source{Upload: true, Registry: "quay.io/containerdisks/fedora:41"}, ""},
		{"registry reference with upper case refused", map[string]string{AnnSource: "registry", AnnEndpoint: "docker://Kubevirt/X"}, nil, "image reference"},
		{"registry reference too long", map[string]string{AnnSource: "registry", AnnEndpoint: "docker://a/" + strings.Repeat("b", 1100)}, nil, "more than"},
		{"registry without image", map[string]string{AnnSource: "registry"}, nil, "image reference"},
		{"unknown source", map[string]string{AnnSource: "s3"}, nil, "unknown source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSource(tt.ann)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tt.want == nil) || got != nil && (got.Upload != tt.want.Upload || got.Registry != tt.want.Registry || (got.Import == nil) != (tt.want.Import == nil) || got.Import != nil && *got.Import != *tt.want.Import) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReportRoundTrip(t *testing.T) {
	c := Content{Phase: PhasePopulating, Progress: "12.50%", Message: "restarted", Restarts: 2}
	got, ok := ParseReport(ReportAnnotations(c))
	if !ok || got != c {
		t.Fatalf("round trip gave %+v, %v", got, ok)
	}
	if _, ok := ParseReport(map[string]string{}); ok {
		t.Fatal("an unreported PVC parsed as reported")
	}
}
