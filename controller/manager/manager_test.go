package manager

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(good, []byte(strings.Repeat("k", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc := &rest.Config{Host: "https://127.0.0.1:1"}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no api server", Config{LauncherImage: "l", SigningKeyFile: good}, "no API server"},
		{"no image", Config{RestConfig: rc, SigningKeyFile: good}, "--launcher-image is empty"},
		{"no key", Config{RestConfig: rc, LauncherImage: "l"}, "--signing-key-file is empty"},
		{"missing key file", Config{RestConfig: rc, LauncherImage: "l", SigningKeyFile: filepath.Join(dir, "nope")}, "read signing key"},
		{"short key", Config{RestConfig: rc, LauncherImage: "l", SigningKeyFile: short}, "has 8 bytes, want at least 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New() error = %v, want %q", err, tt.wantErr)
			}
		})
	}
	key, err := readKey(good)
	if err != nil || len(key) != 32 {
		t.Errorf("readKey trims the newline: %q, %v", key, err)
	}
}
