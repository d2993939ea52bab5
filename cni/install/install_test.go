package install

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

const flannel = `{
  "name": "cbr0",
  "cniVersion": "1.0.0",
  "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

const singleBridge = `{"cniVersion":"0.4.0","name":"mynet","type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.22.0.0/16"}}`

type node struct {
	bin, conf, state, src, key string
}

func newNode(t *testing.T, files map[string]string) node {
	t.Helper()
	root := t.TempDir()
	n := node{
		bin: filepath.Join(root, "bin"), conf: filepath.Join(root, "net.d"), state: filepath.Join(root, "state"),
		src: filepath.Join(root, "slimvirt-cni"), key: filepath.Join(root, "secret", "key"),
	}
	for _, d := range []string{n.bin, n.conf, filepath.Dir(n.key)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Must(t, os.WriteFile(n.src, []byte("#!/bin/true plugin binary"), 0o755))
	testutil.Must(t, os.WriteFile(n.key, []byte("secret-key"), 0o644))
	for name, content := range files {
		testutil.Must(t, os.WriteFile(filepath.Join(n.conf, name), []byte(content), 0o644))
	}
	return n
}

func (n node) installer(t *testing.T, conflist string, uninstallOnExit bool) *Installer {
	t.Helper()
	in, err := New(Config{CNIBinDir: n.bin, CNIConfDir: n.conf, SourceBinary: n.src, StateDir: n.state,
		SigningKeyFile: n.key, Conflist: conflist, UninstallOnExit: uninstallOnExit, Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// pluginTypes reads a conflist's plugin types in order.
func pluginTypes(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var doc struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	var out []string
	for _, p := range doc.Plugins {
		out = append(out, p["type"].(string))
	}
	return out
}

func TestInstallUninstall(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		conflist string
		// chained is the file that must end with slimvirt; gone is a file moved aside meanwhile.
		chained, gone string
		want          []string
		untouched     []string
	}{
		{name: "conflist", files: map[string]string{"10-flannel.conflist": flannel},
			chained: "10-flannel.conflist", want: []string{"flannel", "portmap", "slimvirt"}},
		{name: "single plugin conf becomes a conflist", files: map[string]string{"10-mynet.conf": singleBridge},
			chained: "10-mynet.conflist", gone: "10-mynet.conf", want: []string{"bridge", "slimvirt"}},
		{name: "lexically first wins", files: map[string]string{"20-flannel.conflist": flannel, "30-other.conflist": flannel,
			"05-ours.conflist": `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"slimvirt"}]}`, "notes.txt": "x"},
			chained: "20-flannel.conflist", want: []string{"flannel", "portmap", "slimvirt"}, untouched: []string{"30-other.conflist", "05-ours.conflist"}},
		{name: "named conflist", files: map[string]string{"20-flannel.conflist": flannel, "30-other.conflist": flannel},
			conflist: "30-other.conflist", chained: "30-other.conflist", want: []string{"flannel", "portmap", "slimvirt"}, untouched: []string{"20-flannel.conflist"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, tt.files)
			in := n.installer(t, tt.conflist, false)
			testutil.Must(t, in.Install())
			if got := pluginTypes(t, filepath.Join(n.conf, tt.chained)); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("plugins %v, want %v", got, tt.want)
			}
			if tt.gone != "" {
				if _, err := os.Stat(filepath.Join(n.conf, tt.gone)); !os.IsNotExist(err) {
					t.Errorf("%s still there: %v", tt.gone, err)
				}
			}
			for _, u := range tt.untouched {
				if b, _ := os.ReadFile(filepath.Join(n.conf, u)); string(b) != tt.files[u] {
					t.Errorf("%s changed", u)
				}
			}
			bin, err := os.Stat(filepath.Join(n.bin, "slimvirt"))
			if err != nil || bin.Mode().Perm() != 0o755 {
				t.Errorf("binary: %v %v", bin, err)
			}
			key, err := os.Stat(filepath.Join(n.state, "signing.key"))
			if err != nil || key.Mode().Perm() != 0o600 {
				t.Errorf("key copy: %v %v", key, err)
			}
			b, _ := os.ReadFile(filepath.Join(n.conf, tt.chained))
			if !strings.Contains(string(b), filepath.Join(n.state, "signing.key")) || !strings.Contains(string(b), `"io.kubernetes.cri.pod-annotations": true`) {
				t.Errorf("entry lacks key path or capability:\n%s", b)
			}

			// A second install changes nothing.
			st1, _ := os.Stat(filepath.Join(n.conf, tt.chained))
			testutil.Must(t, n.installer(t, tt.conflist, false).Install())
			st2, _ := os.Stat(filepath.Join(n.conf, tt.chained))
			if !st1.ModTime().Equal(st2.ModTime()) {
				t.Errorf("second install rewrote %s", tt.chained)
			}

			testutil.Must(t, in.Uninstall())
			for name, content := range tt.files {
				if b, err := os.ReadFile(filepath.Join(n.conf, name)); err != nil || string(b) != content {
					t.Errorf("after uninstall %s = %q (%v), want the original", name, b, err)
				}
			}
			if tt.gone != "" {
				if _, err := os.Stat(filepath.Join(n.conf, tt.chained)); !os.IsNotExist(err) {
					t.Errorf("after uninstall %s still there", tt.chained)
				}
			}
			if _, err := os.Stat(filepath.Join(n.bin, "slimvirt")); !os.IsNotExist(err) {
				t.Errorf("binary still there after uninstall")
			}
		})
	}
}

func TestInstallRefusesOldVersion(t *testing.T) {
	n := newNode(t, map[string]string{"10-old.conf": `{"cniVersion":"0.2.0","name":"old","type":"bridge"}`})
	err := n.installer(t, "", false).Install()
	if err == nil || !strings.Contains(err.Error(), "cannot chain") {
		t.Fatalf("Install = %v, want a refusal to chain into 0.2.0", err)
	}
}

// TestRunReinserts plays a cluster CNI that rewrites its file while the node agent runs.
func TestRunReinserts(t *testing.T) {
	n := newNode(t, map[string]string{"10-flannel.conflist": flannel})
	in := n.installer(t, "", true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	path := filepath.Join(n.conf, "10-flannel.conflist")
	testutil.WaitFor(t, 5*time.Second, "slimvirt chained into "+path, func() bool { return len(pluginTypes(t, path)) == 3 })

	rewritten := strings.Replace(flannel, `"hairpinMode": true`, `"hairpinMode": false`, 1)
	testutil.Must(t, os.WriteFile(path, []byte(rewritten), 0o644))
	testutil.WaitFor(t, 5*time.Second, "slimvirt chained again into the rewritten "+path, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), `"hairpinMode": false`) && strings.Contains(string(b), `"slimvirt"`)
	})

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, []byte(rewritten)) {
		t.Errorf("after exit the file is\n%s\nwant the cluster CNI's last version", b)
	}
}

// TestRunWaitsForConfig: on a fresh node the cluster CNI writes its file after the agent starts.
func TestRunWaitsForConfig(t *testing.T) {
	n := newNode(t, nil)
	in := n.installer(t, "", false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	time.Sleep(200 * time.Millisecond)
	path := filepath.Join(n.conf, "10-flannel.conflist")
	testutil.Must(t, os.WriteFile(path, []byte(flannel), 0o644))
	testutil.WaitFor(t, 5*time.Second, "slimvirt chained into the new "+path, func() bool { return len(pluginTypes(t, path)) == 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestUninstallWithoutRecord: with the state dir gone, uninstall still takes slimvirt out.
func TestUninstallWithoutRecord(t *testing.T) {
	n := newNode(t, map[string]string{"10-flannel.conflist": flannel})
	in := n.installer(t, "", false)
	testutil.Must(t, in.Install())
	testutil.Must(t, os.RemoveAll(n.state))
	testutil.Must(t, in.Uninstall())
	if got := pluginTypes(t, filepath.Join(n.conf, "10-flannel.conflist")); strings.Join(got, ",") != "flannel,portmap" {
		t.Errorf("plugins %v after uninstall, want flannel,portmap", got)
	}
}

// TestRunFollowsNewFile: a cluster CNI that adds a lexically earlier file gets slimvirt there,
// and the file it left is given back as it was.
func TestRunFollowsNewFile(t *testing.T) {
	n := newNode(t, map[string]string{"20-old.conflist": flannel})
	in := n.installer(t, "", true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	old, newer := filepath.Join(n.conf, "20-old.conflist"), filepath.Join(n.conf, "10-new.conflist")
	testutil.WaitFor(t, 5*time.Second, "slimvirt chained into "+old, func() bool { return len(pluginTypes(t, old)) == 3 })
	testutil.Must(t, os.WriteFile(newer, []byte(flannel), 0o644))
	testutil.WaitFor(t, 5*time.Second, "slimvirt moved from "+old+" to "+newer, func() bool {
		b, _ := os.ReadFile(old)
		return len(pluginTypes(t, newer)) == 3 && string(b) == flannel
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, p := range []string{old, newer} {
		if b, _ := os.ReadFile(p); string(b) != flannel {
			t.Errorf("%s after exit:\n%s", p, b)
		}
	}
}
