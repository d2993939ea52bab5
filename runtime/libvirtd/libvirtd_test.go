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

// A host UUID, when given, reaches libvirtd.conf; one that is not a UUID is refused.
func TestHostUUID(t *testing.T) {
	for _, tc := range []struct {
		uuid, want string
		ok         bool
	}{
		{"", "", true},
		{"6f1c2a47-25a8-4c1b-9f0e-3d2b8a7c6e51", `host_uuid = "6f1c2a47-25a8-4c1b-9f0e-3d2b8a7c6e51"`, true},
		{"6f1c2a47\"\nlisten_tcp = 1", "", false},
	} {
		run := filepath.Join(t.TempDir(), "libvirt")
		d := &Daemons{cfg: Config{RunDir: run, HostUUID: tc.uuid}, session: true}
		err := d.writeConfig()
		if (err == nil) != tc.ok {
			t.Fatalf("host UUID %q: err %v", tc.uuid, err)
		}
		if !tc.ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.confDir(), "libvirtd.conf"))
		testutil.Must(t, err)
		if got := strings.Contains(string(b), "host_uuid"); got != (tc.want != "") || !strings.Contains(string(b), tc.want) {
			t.Errorf("host UUID %q: libvirtd.conf:\n%s", tc.uuid, b)
		}
	}
}
