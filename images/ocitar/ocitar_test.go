package ocitar

import (
	"os"
	"path/filepath"
	"testing"

	"archive/tar"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"io"
)

func TestBuildWritesLoadableImage(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("guest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hostname", filepath.Join(root, "etc", "name")); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tool")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	err := Build(Config{Tag: "slimvirt.io/test:dev", Output: out, RootFS: root,
		Adds: []string{bin + ":/usr/bin/tool:755", bin + ":/usr/bin/netd:0755:cap_net_bind_service,cap_net_raw"}, Entrypoint: []string{"/usr/bin/tool"}, Cmd: []string{"--serve"}})
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("slimvirt.io/test:dev")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Config.Cmd; len(got) != 1 || got[0] != "--serve" {
		t.Fatalf("cmd %v", got)
	}
	if got := cf.Config.Entrypoint; len(got) != 1 || got[0] != "/usr/bin/tool" {
		t.Errorf("entrypoint = %v", got)
	}
	files := map[string]*tar.Header{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
	}
	if h := files["usr/bin/tool"]; h == nil || h.Mode != 0o755 {
		t.Errorf("usr/bin/tool missing or wrong mode: %+v", h)
	}
	if h := files["etc/name"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "hostname" {
		t.Errorf("etc/name symlink lost: %+v", h)
	}
	// setcap cap_net_bind_service,cap_net_raw+ep: revision 2, effective, bits 10 and 13.
	wantCaps := "\x01\x00\x00\x02\x00\x24\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	if h := files["usr/bin/netd"]; h == nil || h.PAXRecords[xattrCapability] != wantCaps {
		t.Errorf("usr/bin/netd file capabilities lost: %+v", h)
	}
	if h := files["usr/bin/tool"]; h != nil && h.PAXRecords[xattrCapability] != "" {
		t.Errorf("usr/bin/tool has capabilities it was not given")
	}
	if files["etc/hostname"] == nil {
		t.Errorf("etc/hostname missing")
	}
}

func TestBuildNeedsTagAndOutput(t *testing.T) {
	if err := Build(Config{Output: "x"}); err == nil {
		t.Fatal("Build without a tag succeeded")
	}
}
