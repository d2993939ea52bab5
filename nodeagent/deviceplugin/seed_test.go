package deviceplugin

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/slimvirt/slimvirt/api/launcherpod"
)

// TestSeed: the node's seed is offered only once it holds the copier (pods wait for a seeded
// node, as they did for the hostPath it replaces), and each container that asks gets it
// read-only at launcherpod.NodeDir, nothing else; a link in place of the seed or its copier is
// not offered.
func TestSeed(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	seed := filepath.Join(state, "launcher")
	k := startKubelet(t, dir)
	start(t, Config{Dir: dir, DeviceCount: 2, Poll: 20 * time.Millisecond, SeedDir: seed})
	regs := k.await(t, 3)
	if r := regs[launcherpod.ResourceSeed]; r == nil || r.Endpoint != "slimvirt-seed.sock" {
		t.Fatalf("seed registration = %v", r)
	}
	c := client(t, filepath.Join(dir, "slimvirt-seed.sock"))
	next := watch(t, c)
	marker := filepath.Join(seed, launcherpod.NodeSeedMarker)
	steps := []struct {
		name   string
		change func() error
		want   string
	}{
		{"not seeded", func() error { return nil }, pluginapi.Unhealthy},
		{"seeded", func() error {
			if err := os.Mkdir(seed, 0o755); err != nil {
				return err
			}
			if err := mountErr(SeedResource(seed, 1).Mount); err == nil {
				t.Error("a seed directory without the copier is offered")
			}
			return os.WriteFile(marker, []byte("ELF"), 0o755)
		}, pluginapi.Healthy},
		{"copier replaced by a link", func() error { _ = os.Remove(marker); return os.Symlink("/bin/sh", marker) }, pluginapi.Unhealthy},
		{"seeded again", func() error { _ = os.Remove(marker); return os.WriteFile(marker, []byte("ELF"), 0o755) }, pluginapi.Healthy},
	}
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatal(err)
		}
		h, ids := next()
		if h != s.want {
			t.Fatalf("%s: health %s, want %s", s.name, h, s.want)
		}
		if len(ids) != 2*SeedPerPod {
			t.Fatalf("%d seed devices, want %d (containers of %d pods)", len(ids), 2*SeedPerPod, 2)
		}
	}

	resp, err := c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"seed0"}}, {DevicesIds: []string{"seed1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 2 {
		t.Fatalf("%d container responses, want 2", len(resp.ContainerResponses))
	}
	for _, cr := range resp.ContainerResponses {
		if len(cr.Devices) != 0 || len(cr.Mounts) != 1 || cr.Mounts[0].HostPath != seed || cr.Mounts[0].ContainerPath != launcherpod.NodeDir || !cr.Mounts[0].ReadOnly {
			t.Errorf("container response %v, want only %s read-only at %s", cr, seed, launcherpod.NodeDir)
		}
	}
	if err := os.RemoveAll(seed); err != nil {
		t.Fatal(err)
	}
	_, err = c.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"seed0"}}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("allocating a removed seed: %v, want FailedPrecondition", err)
	}
}
