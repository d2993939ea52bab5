package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// markerPrefix starts the name of the directory the API server and etcd run from.
const markerPrefix = "slimvirt-envtest-"

// RepoRoot is the repository's top directory, found from this file's place in it.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// K8sVersion is the Kubernetes version the build pins: $K8S_VERSION (make exports it), else
// the default the Makefile sets, so the version is written in one place.
func K8sVersion() (string, error) {
	if v := os.Getenv("K8S_VERSION"); v != "" {
		return v, nil
	}
	return makeVariable(filepath.Join(RepoRoot(), "Makefile"), "K8S_VERSION")
}

// makeVariable reads the value of a `NAME ?= value` or `NAME := value` line of a Makefile.
func makeVariable(makefile, name string) (string, error) {
	data, err := os.ReadFile(makefile)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", makefile, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == name && (f[1] == "?=" || f[1] == ":=" || f[1] == "=") {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("%s sets no %s", makefile, name)
}

// K8sBinDir holds the Kubernetes binaries (kube-apiserver, kube-controller-manager):
// $K8S_BIN, else the cache `make k8s` builds them into,
// $SLIMVIRT_CACHE/k8s/<K8sVersion>/bin ($SLIMVIRT_CACHE is /var/cache/slimvirt by default).
func K8sBinDir() (string, error) {
	if dir := os.Getenv("K8S_BIN"); dir != "" {
		return dir, nil
	}
	version, err := K8sVersion()
	if err != nil {
		return "", err
	}
	cache := os.Getenv("SLIMVIRT_CACHE")
	if cache == "" {
		cache = "/var/cache/slimvirt"
	}
	return filepath.Join(cache, "k8s", version, "bin"), nil
}

// etcdPath is $ETCD, else the distribution's etcd.
func etcdPath() string {
	if p := os.Getenv("ETCD"); p != "" {
		return p
	}
	return "/usr/bin/etcd"
}

// binaryDir makes a directory, named with prefix, holding links to kube-apiserver and etcd,
// where envtest looks for them.
func binaryDir(prefix string) (string, error) {
	k8sBin, err := K8sBinDir()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("make envtest binary dir: %w", err)
	}
	for name, target := range map[string]string{"kube-apiserver": filepath.Join(k8sBin, "kube-apiserver"), "etcd": etcdPath()} {
		if _, err := os.Stat(target); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("%s is needed: %w", name, err)
		}
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("link %s: %w", name, err)
		}
	}
	return dir, nil
}
