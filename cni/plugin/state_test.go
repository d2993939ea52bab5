package plugin

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/binding"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestIsFileToken(t *testing.T) {
	tests := map[string]bool{
		"0f3c9a7e2b1d": true, "k8s-pod-network": true, "my_net.v2": true, "eth0": true,
		"": false, "..": false, "../etc": false, "a/b": false, ".hidden": false, "-x": false,
		"a..b": false, "with space": false, string(make([]byte, 300)): false,
	}
	for s, want := range tests {
		if got := isFileToken(s); got != want {
			t.Errorf("isFileToken(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestStoreReload: each change to the store (a record saved, saved again, removed) reads back
// the same from disk, and a temporary file a killed write left is no record.
func TestStoreReload(t *testing.T) {
	s := &store{dir: filepath.Join(t.TempDir(), "attachments", "net")}
	r := &record{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/p1",
		Attachment: &binding.Attachment{Binding: launcherpod.BindingBridge, IfName: "eth0", GuestMAC: "02:00:00:00:00:01"}}
	testutil.Must(t, s.save(r))
	reload := func(want *record) {
		t.Helper()
		got, err := s.load("c1", "eth0")
		testutil.Must(t, err)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("reloaded %+v, want %+v", got, want)
		}
	}
	reload(r)
	p, err := s.path("c1", "eth0")
	testutil.Must(t, err)
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file %s: %v, %v; want mode 0600", p, fi, err)
	}

	r.Attachment.GuestIP = "10.0.0.5"
	testutil.Must(t, s.save(r))
	reload(r)

	testutil.Must(t, os.WriteFile(filepath.Join(s.dir, ".c2_eth0.json.tmp-1"), []byte(`{"containerID":"c2"`), 0o600))
	all, err := s.list()
	testutil.Must(t, err)
	if len(all) != 1 || !reflect.DeepEqual(all[0], r) {
		t.Fatalf("list = %+v, want only %+v", all, r)
	}

	testutil.Must(t, s.remove("c1", "eth0"))
	reload(nil)
	testutil.Must(t, s.remove("c1", "eth0"))
}
