package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMakeVariable(t *testing.T) {
	mk := filepath.Join(t.TempDir(), "Makefile")
	if err := os.WriteFile(mk, []byte("SLIMVIRT_CACHE ?= /var/cache/slimvirt\nK8S_VERSION ?= v1.2.3\nK8S_BIN := $(SLIMVIRT_CACHE)/k8s/$(K8S_VERSION)/bin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := makeVariable(mk, "K8S_VERSION"); err != nil || v != "v1.2.3" {
		t.Fatalf("K8S_VERSION = %q, %v", v, err)
	}
	if v, err := makeVariable(mk, "ETCD_VERSION"); err == nil {
		t.Fatalf("a variable the Makefile does not set read as %q", v)
	}
}

// TestK8sBinDir: without the variables make exports, the binaries are found where `make k8s`
// puts them, for the version the repository's Makefile pins.
func TestK8sBinDir(t *testing.T) {
	t.Setenv("K8S_BIN", "")
	t.Setenv("K8S_VERSION", "")
	t.Setenv("SLIMVIRT_CACHE", "")
	version, err := K8sVersion()
	if err != nil || !strings.HasPrefix(version, "v1.") {
		t.Fatalf("K8sVersion() = %q, %v", version, err)
	}
	dir, err := K8sBinDir()
	if err != nil || dir != filepath.Join("/var/cache/slimvirt/k8s", version, "bin") {
		t.Fatalf("K8sBinDir() = %q, %v", dir, err)
	}
	t.Setenv("K8S_BIN", "/opt/k8s/bin")
	if dir, err := K8sBinDir(); err != nil || dir != "/opt/k8s/bin" {
		t.Fatalf("with K8S_BIN: %q, %v", dir, err)
	}
}
