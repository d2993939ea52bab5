package capsseed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Collect, then Install in another pod: the cache files arrive; one already in the cache stays;
// libvirtd replacing a file shows as not Kept.
func TestCollectInstall(t *testing.T) {
	probed := SessionCacheDir(t.TempDir())
	write(t, filepath.Join(probed, "a.xml"), "<qemuCaps>a</qemuCaps>")
	write(t, filepath.Join(probed, "b.xml"), "<qemuCaps>b</qemuCaps>")
	write(t, filepath.Join(probed, "notes.txt"), "not a cache file")
	seed := filepath.Join(t.TempDir(), "qemu-caps")
	n, err := Collect(probed, seed)
	if err != nil || n != 2 {
		t.Fatalf("Collect = %d, %v; want 2 files", n, err)
	}
	if st, err := os.Stat(filepath.Join(seed, "a.xml")); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("seed a.xml: %v %v; want world-readable for every launcher", st, err)
	}
	if _, err := os.Stat(filepath.Join(seed, "notes.txt")); err == nil {
		t.Error("Collect copied a file that is not a cache file")
	}

	cache := SessionCacheDir(t.TempDir())
	write(t, filepath.Join(cache, "b.xml"), "<qemuCaps>mine</qemuCaps>")
	seeded, err := Install(seed, cache)
	if err != nil || len(seeded) != 1 || seeded[0].Path != filepath.Join(cache, "a.xml") {
		t.Fatalf("Install = %+v, %v; want a.xml only", seeded, err)
	}
	if got := read(t, filepath.Join(cache, "a.xml")); got != "<qemuCaps>a</qemuCaps>" {
		t.Errorf("a.xml = %q", got)
	}
	if got := read(t, filepath.Join(cache, "b.xml")); got != "<qemuCaps>mine</qemuCaps>" {
		t.Errorf("b.xml already cached was replaced: %q", got)
	}
	if !seeded[0].Kept() {
		t.Error("an untouched seed is not Kept")
	}
	// libvirtd writes a fresh probe as a new file.
	write(t, filepath.Join(cache, ".new"), "<qemuCaps>probed</qemuCaps>")
	if err := os.Rename(filepath.Join(cache, ".new"), filepath.Join(cache, "a.xml")); err != nil {
		t.Fatal(err)
	}
	if seeded[0].Kept() {
		t.Error("a replaced seed is still Kept")
	}
}

func TestNoSeed(t *testing.T) {
	seeded, err := Install(filepath.Join(t.TempDir(), "missing"), t.TempDir())
	if err != nil || seeded != nil {
		t.Errorf("Install from a missing seed = %v, %v; want nothing and no error", seeded, err)
	}
	if _, err := Collect(t.TempDir(), t.TempDir()); err == nil {
		t.Error("Collect from an empty cache succeeded")
	}
}

// A node without KVM: the seed drops the flag that makes libvirt read a starting domain's CPU
// feature by feature, and keeps everything else; a KVM node's seed (host-model CPUs may list
// MSR features, which libvirt refuses without the flag) and other architectures keep it.
func TestCollectSkipsGenericCPUQueryWithoutKVM(t *testing.T) {
	caps := func(arch string, hostCPUs ...string) string {
		s := "<qemuCaps>\n  <flag name='x86-max-cpu'/>\n  <flag name='cpu-unavailable-features'/>\n  <flag name='tcg'/>\n  <arch>" + arch + "</arch>\n"
		for _, h := range hostCPUs {
			s += "  <hostCPU type='" + h + "' model='base' migratability='yes'>\n  </hostCPU>\n"
		}
		return s + "</qemuCaps>\n"
	}
	probed := SessionCacheDir(t.TempDir())
	write(t, filepath.Join(probed, "tcg.xml"), caps("x86_64", "tcg"))
	write(t, filepath.Join(probed, "kvm.xml"), caps("x86_64", "kvm", "tcg"))
	write(t, filepath.Join(probed, "arm.xml"), caps("aarch64", "tcg"))
	seed := t.TempDir()
	if _, err := Collect(probed, seed); err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(caps("x86_64", "tcg"), "  <flag name='cpu-unavailable-features'/>\n", "", 1)
	if got := read(t, filepath.Join(seed, "tcg.xml")); got != want {
		t.Errorf("TCG-only x86 seed =\n%s\nwant\n%s", got, want)
	}
	for _, f := range []string{"kvm.xml", "arm.xml"} {
		if got := read(t, filepath.Join(seed, f)); got != read(t, filepath.Join(probed, f)) {
			t.Errorf("%s changed in the seed:\n%s", f, got)
		}
	}
}
