package libvirtd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// libvirt's QEMU account is added once to passwd and group files that lack it, after a last
// line without a newline too.
func TestEnsureQEMUAccount(t *testing.T) {
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	testutil.Must(t, os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh"), 0o644))
	testutil.Must(t, os.WriteFile(group, []byte("root:x:0:\n"), 0o644))
	for range 2 {
		testutil.Must(t, ensureQEMUAccount(passwd, group))
	}
	for path, want := range map[string]string{
		passwd: "root:x:0:0:root:/root:/bin/sh\nlibvirt-qemu:x:64055:64055:libvirt QEMU:/var/lib/libvirt:/usr/sbin/nologin\n",
		group:  "root:x:0:\nlibvirt-qemu:x:64055:\n",
	} {
		b, err := os.ReadFile(path)
		testutil.Must(t, err)
		if string(b) != want {
			t.Errorf("%s:\n%s\nwant:\n%s", filepath.Base(path), b, want)
		}
	}
}

// The session daemon keeps everything below RunDir; the system daemon uses the fixed paths.
func TestSessionPaths(t *testing.T) {
	cfg := Config{RunDir: "/run/x/libvirt", ConfDir: "/etc/libvirt"}
	session := &Daemons{cfg: cfg, session: true}
	system := &Daemons{cfg: cfg}
	if got := session.confDir(); got != "/run/x/libvirt/config/libvirt" {
		t.Errorf("session confDir %s", got)
	}
	if got := system.confDir(); got != "/etc/libvirt" {
		t.Errorf("system confDir %s", got)
	}
	if got := strings.Join(session.sessionEnv(), " "); got != "HOME=/run/x/libvirt XDG_RUNTIME_DIR=/run/x XDG_CONFIG_HOME=/run/x/libvirt/config XDG_CACHE_HOME=/run/x/libvirt/cache" {
		t.Errorf("session env %s", got)
	}
	if system.sessionEnv() != nil {
		t.Error("the system daemon got a session environment")
	}
	if got := cfg.QEMULog("ns_vm", true); got != "/run/x/libvirt/cache/libvirt/qemu/log/ns_vm.log" {
		t.Errorf("session QEMU log %s", got)
	}
	if got := cfg.QEMULog("ns_vm", false); got != "/var/log/libvirt/qemu/ns_vm.log" {
		t.Errorf("system QEMU log %s", got)
	}
	if got := session.CapsCacheDir(); got != "/run/x/libvirt/cache/libvirt/qemu/cache/capabilities" {
		t.Errorf("session capabilities cache %s", got)
	}
}
