// Package capsseed spares each launcher's libvirtd its probe of QEMU. Before libvirtd can
// start a domain it asks QEMU what it supports (machine types, CPU models, devices); that
// takes about 1.6 s and half a CPU-second, once per pod, and libvirtd caches the answer only
// in the pod's own emptyDir. The node agent probes once per node with the launcher image
// (Collect) and puts the cache files in the directory the launcher pods mount read-only; each
// launcher copies them into its libvirtd's cache before starting it (Install). libvirtd
// checks every cache file itself (the ctime of the QEMU and libvirt binaries, libvirt's
// version, whether KVM is usable) and probes again when one does not match: a stale seed
// costs the probe it was meant to save, never a wrong answer.
//
// On a node without usable KVM the seed also spares each domain start about 400 QMP round
// trips (see withoutGenericCPUQuery).
package capsseed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// SessionCacheDir is where libvirtd in session mode (not root) keeps its QEMU capabilities
// cache, under $XDG_CACHE_HOME.
func SessionCacheDir(cacheHome string) string {
	return filepath.Join(cacheHome, "libvirt", "qemu", "cache", "capabilities")
}

// SystemCacheDir is where libvirtd running as root keeps it.
const SystemCacheDir = "/var/cache/libvirt/qemu/capabilities"

// Seeded is one cache file Install put in place.
type Seeded struct {
	Path string
	ino  uint64
}

// Kept says whether libvirtd kept the seeded file: one it finds stale it replaces with a
// fresh probe's, which is a new file.
func (s Seeded) Kept() bool {
	st, err := os.Stat(s.Path)
	if err != nil {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Ino == s.ino
}

// Install copies the cache files (*.xml) of seedDir into cacheDir, readable by this user
// only as libvirtd writes them, and returns them. A missing seedDir is no seed; a file
// already in cacheDir is left as it is.
func Install(seedDir, cacheDir string) ([]Seeded, error) {
	names, err := cacheFiles(seedDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("create libvirt's capabilities cache %s: %w", cacheDir, err)
	}
	var out []Seeded
	for _, name := range names {
		dst := filepath.Join(cacheDir, name)
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(seedDir, name))
		if err != nil {
			return out, fmt.Errorf("read %s: %w", name, err)
		}
		if err := atomicfile.WriteFile(dst, b, 0o600); err != nil {
			return out, err
		}
		st, err := os.Stat(dst)
		if err != nil {
			return out, fmt.Errorf("stat %s: %w", dst, err)
		}
		out = append(out, Seeded{Path: dst, ino: st.Sys().(*syscall.Stat_t).Ino})
	}
	return out, nil
}

// Collect copies libvirtd's cache files from cacheDir into seedDir, each replaced at once
// (launchers may be reading the old one), world-readable, and returns how many it copied.
func Collect(cacheDir, seedDir string) (int, error) {
	names, err := cacheFiles(cacheDir)
	if err != nil {
		return 0, err
	}
	if len(names) == 0 {
		return 0, fmt.Errorf("libvirtd left no capabilities in %s", cacheDir)
	}
	if err := os.MkdirAll(seedDir, 0o755); err != nil {
		return 0, fmt.Errorf("create %s: %w", seedDir, err)
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(cacheDir, name))
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", name, err)
		}
		if err := atomicfile.WriteFile(filepath.Join(seedDir, name), withoutGenericCPUQuery(b), 0o644); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}

// cacheFiles lists the cache files of dir: libvirt names them <sha256 of the binary>.xml.
func cacheFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".xml") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// unavailableFeaturesFlag is the capability that makes libvirt (9.x) read the guest CPU of a
// starting x86 domain property by property: a qom-get per CPU feature, about 400 QMP round
// trips that cost QEMU and libvirtd a third of a CPU-second and take most of a domain's start.
// Without it libvirt reads the same features in two qom-gets (feature-words and
// filtered-features), as it did before QEMU had the property.
const unavailableFeaturesFlag = "<flag name='cpu-unavailable-features'/>"

// withoutGenericCPUQuery drops unavailableFeaturesFlag from an x86 cache file probed without
// KVM. The flag also makes libvirt accept MSR-based CPU features in a domain's CPU; under TCG
// the launcher's CPU is qemu64 without extra features, while with KVM it is host-model, which
// lists such features: a KVM node's file is left as it is.
func withoutGenericCPUQuery(b []byte) []byte {
	s := string(b)
	if !strings.Contains(s, "<arch>x86_64</arch>") || strings.Contains(s, "<hostCPU type='kvm'") {
		return b
	}
	var out []string
	for _, line := range strings.SplitAfter(s, "\n") {
		if strings.TrimSpace(line) != unavailableFeaturesFlag {
			out = append(out, line)
		}
	}
	return []byte(strings.Join(out, ""))
}
