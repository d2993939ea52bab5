package vmifile

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func write(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vmi.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRead(t *testing.T) {
	vmi := []byte(`{"metadata":{"name":"vm1"},"spec":{}}`)
	big := []byte(`{"spec":{"x":"` + strings.Repeat("a", 200<<10) + `"}}`)
	over := make([]byte, launcherpod.MaxVMISize+1)
	tests := []struct {
		name    string
		data    []byte
		sha     string
		wantErr string
	}{
		{"as the controller wrote it", vmi, sum(vmi), ""},
		{"a 200 KiB VMI", big, sum(big), ""},
		{"annotation edited after the pod was made", []byte(`{"metadata":{"name":"vm2"}}`), sum(vmi), "was changed after the pod was made"},
		{"larger than the bound", over, sum(over), "larger than"},
		{"empty: no annotation", nil, sum(nil), "empty"},
		{"digest not hex", vmi, "xyz", "not a SHA-256"},
		{"digest too short", vmi, sum(vmi)[:10], "not a SHA-256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(write(t, tt.data), tt.sha)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != string(tt.data) {
				t.Fatalf("Read = %d bytes, %v; want the file", len(got), err)
			}
		})
	}
	if _, err := Read(t.TempDir(), sum(vmi)); err == nil {
		t.Error("a directory was read as the VMI")
	}
}

// FuzzRead: whatever the file holds, Read returns it only when it is within the bound and has
// the digest it was given; everything else is an error, never a panic.
func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"metadata":{"name":"vm1"}}`), true)
	f.Add([]byte(`{}`), false)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, data []byte, matching bool) {
		want := sum(data)
		if !matching {
			want = sum(append([]byte("x"), data...))
		}
		got, err := Read(write(t, data), want)
		if err != nil {
			return
		}
		if !matching || len(got) > launcherpod.MaxVMISize || string(got) != string(data) {
			t.Fatalf("accepted %d bytes (matching digest %v)", len(got), matching)
		}
	})
}
