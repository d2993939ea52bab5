package command

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestUploadTarget(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		dv, pvc string
		want    string
		wantErr bool
	}{
		{name: "dv positional", args: []string{"dv", "fedora"}, want: "fedora"},
		{name: "pvc positional", args: []string{"pvc", "fedora"}, want: "fedora"},
		{name: "--dv flag", dv: "fedora", want: "fedora"},
		{name: "--pvc-name flag", pvc: "fedora", want: "fedora"},
		{name: "same name twice", args: []string{"dv", "fedora"}, dv: "fedora", want: "fedora"},
		{name: "two names", args: []string{"dv", "a"}, pvc: "b", wantErr: true},
		{name: "nothing", wantErr: true},
		{name: "unknown kind", args: []string{"vm", "x"}, wantErr: true},
		{name: "one arg", args: []string{"fedora"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := uploadTarget(tt.args, tt.dv, tt.pvc)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("uploadTarget = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		sent, total int64
		want        string
	}{
		{0, 100 << 20, "[>         ]   0.00% 0 B / 100.0 MiB"},
		{50 << 20, 100 << 20, "[=====>    ]  50.00% 50.0 MiB / 100.0 MiB"},
		{100 << 20, 100 << 20, "[==========] 100.00% 100.0 MiB / 100.0 MiB"},
		{3 << 30, 2 << 30, "[==========] 100.00% 3.0 GiB / 2.0 GiB"},
		{2048, -1, "2.0 KiB sent"},
	}
	for _, tt := range tests {
		if got := progressLine(tt.sent, tt.total, 10); got != tt.want {
			t.Errorf("progressLine(%d, %d) = %q, want %q", tt.sent, tt.total, got, tt.want)
		}
	}
}

func TestNewUploadDataVolume(t *testing.T) {
	tests := []struct {
		name    string
		o       uploadOptions
		wantErr bool
	}{
		{name: "no size", o: uploadOptions{}, wantErr: true},
		{name: "bad size", o: uploadOptions{size: "lots"}, wantErr: true},
		{name: "bad volume mode", o: uploadOptions{size: "1Gi", volumeMode: "Disk"}, wantErr: true},
		{name: "all set", o: uploadOptions{size: "5Gi", storageClass: "fast", accessMode: "ReadWriteOnce", volumeMode: "Block"}},
		{name: "size only", o: uploadOptions{size: "512Mi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dv, err := newUploadDataVolume("ns", "disk", tt.o)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if dv.Namespace != "ns" || dv.Name != "disk" || dv.Spec.Source.Upload == nil {
				t.Fatalf("wrong DataVolume: %+v", dv)
			}
			s := dv.Spec.Storage
			if q := s.Resources.Requests[corev1.ResourceStorage]; q.Cmp(resource.MustParse(tt.o.size)) != 0 {
				t.Errorf("size %s, want %s", q.String(), tt.o.size)
			}
			if (s.StorageClassName != nil) != (tt.o.storageClass != "") || (s.StorageClassName != nil && *s.StorageClassName != tt.o.storageClass) {
				t.Errorf("storage class %v, want %q", s.StorageClassName, tt.o.storageClass)
			}
			if (s.VolumeMode != nil) != (tt.o.volumeMode != "") || (s.VolumeMode != nil && string(*s.VolumeMode) != tt.o.volumeMode) {
				t.Errorf("volume mode %v, want %q", s.VolumeMode, tt.o.volumeMode)
			}
			if (len(s.AccessModes) == 1) != (tt.o.accessMode != "") {
				t.Errorf("access modes %v, want %q", s.AccessModes, tt.o.accessMode)
			}
		})
	}
}
