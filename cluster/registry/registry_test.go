package registry

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestNewRefusesAddressesOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:5000", "10.88.0.1:5000", ":5000", "localhost:5000"} {
		if _, err := New(Config{Addr: addr, Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "loopback") && !strings.Contains(err.Error(), "registry address") {
			t.Errorf("New(%q) = %v, want a refusal", addr, err)
		}
	}
	if _, err := New(Config{Addr: "127.0.0.1:5000"}); err == nil {
		t.Error("New without a directory succeeded")
	}
}

// TestPushThenPull: an image pushed under the names a user writes is pulled back by them,
// digest for digest, the way containerd's mirror asks for it; the blobs are on disk.
func TestPushThenPull(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	dir := t.TempDir()
	s, err := New(Config{Addr: addr, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	waitListening(t, addr)

	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	tag, _ := name.NewTag("slimvirt.io/guest:dev")
	if err := tarball.WriteToFile(tarPath, tag, img); err != nil {
		t.Fatal(err)
	}
	names := []string{"kubevirt/fedora-cloud-container-disk-demo:latest", "kubevirt/virtio-container-disk:latest"}
	if err := Push(context.Background(), addr, tarPath, names); err != nil {
		t.Fatal(err)
	}
	// Each name is an image of its own (its config names it), with the tarball's layers.
	wantLayers, _ := img.Layers()
	ids := map[string]bool{}
	for _, n := range names {
		ref, _ := name.ParseReference(addr+"/"+n, name.Insecure)
		got, err := remote.Image(ref)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		cfg, err := got.ConfigFile()
		if err != nil || cfg.Config.Labels[PushedAsLabel] != n {
			t.Errorf("%s: config %+v (%v), want label %s=%s", n, cfg, err, PushedAsLabel, n)
		}
		id, _ := got.ConfigName()
		ids[id.String()] = true
		layers, _ := got.Layers()
		if len(layers) != len(wantLayers) {
			t.Fatalf("%s has %d layers, pushed %d", n, len(layers), len(wantLayers))
		}
		for i := range layers {
			a, _ := layers[i].Digest()
			b, _ := wantLayers[i].Digest()
			if a != b {
				t.Errorf("%s layer %d is %s, pushed %s", n, i, a, b)
			}
		}
	}
	if tarID, _ := img.ConfigName(); len(ids) != len(names) || ids[tarID.String()] {
		t.Errorf("image IDs %v: want one per name, none the tarball's own %s", ids, tarID)
	}
	blobs, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	if len(blobs) < 3 { // two layers and the config
		t.Errorf("blobs on disk: %v, want the layers and the config", blobs)
	}
	if err := Push(context.Background(), addr, filepath.Join(t.TempDir(), "missing.tar"), names); err == nil {
		t.Error("pushing a missing tarball succeeded")
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("registry never listened on %s", addr)
}
