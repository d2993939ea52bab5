package deviceplugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

const wait = 10 * time.Second

// kubelet is the kubelet's side of registration: it accepts every plugin and records it.
type kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	srv  *grpc.Server
	regs chan *pluginapi.RegisterRequest
}

func startKubelet(t *testing.T, dir string) *kubelet {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(dir, kubeletSocket))
	if err != nil {
		t.Fatal(err)
	}
	k := &kubelet{srv: grpc.NewServer(), regs: make(chan *pluginapi.RegisterRequest, 16)}
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(lis) }()
	t.Cleanup(k.srv.Stop)
	return k
}

func (k *kubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.regs <- r
	return &pluginapi.Empty{}, nil
}

// await returns the next n registrations by resource name.
func (k *kubelet) await(t *testing.T, n int) map[string]*pluginapi.RegisterRequest {
	t.Helper()
	got := map[string]*pluginapi.RegisterRequest{}
	timeout := time.After(wait)
	for len(got) < n {
		select {
		case r := <-k.regs:
			got[r.ResourceName] = r
		case <-timeout:
			t.Fatalf("%d of %d plugins registered within %s: %v", len(got), n, wait, got)
		}
	}
	return got
}

// start runs the plugins until the test ends; the returned function stops them and waits.
func start(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.Run(ctx)
		close(done)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(wait):
			t.Fatalf("Run did not return within %s of cancel", wait)
		}
	}
	t.Cleanup(stop)
	return stop
}

func client(t *testing.T, socket string) pluginapi.DevicePluginClient {
	t.Helper()
	conn, err := dial(socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pluginapi.NewDevicePluginClient(conn)
}

// watch opens ListAndWatch; next returns the health of the next list, failing on mixed health.
func watch(t *testing.T, c pluginapi.DevicePluginClient) (next func() (health string, ids []string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*wait)
	t.Cleanup(cancel)
	s, err := c.ListAndWatch(ctx, &pluginapi.Empty{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	return func() (string, []string) {
		t.Helper()
		got := make(chan *pluginapi.ListAndWatchResponse, 1)
		go func() {
			r, err := s.Recv()
			if err != nil {
				t.Errorf("ListAndWatch: %v", err)
			}
			got <- r
		}()
		var r *pluginapi.ListAndWatchResponse
		select {
		case r = <-got:
		case <-time.After(wait):
			t.Fatalf("no device list within %s", wait)
		}
		if r == nil || len(r.Devices) == 0 {
			t.Fatalf("empty device list: %v", r)
		}
		var ids []string
		for _, d := range r.Devices {
			if d.Health != r.Devices[0].Health {
				t.Fatalf("mixed health: %v", r.Devices)
			}
			ids = append(ids, d.ID)
		}
		return r.Devices[0].Health, ids
	}
}

func TestServe(t *testing.T) {
	dir, missing := t.TempDir(), filepath.Join(t.TempDir(), "tun")
	k := startKubelet(t, dir)
	start(t, Config{Dir: dir, DeviceCount: 3, Poll: time.Hour,
		Resources: []Resource{{Name: KVM, Path: "/dev/null"}, {Name: Tun, Path: missing}}})

	regs := k.await(t, 2)
	for name, endpoint := range map[string]string{KVM: "slimvirt-kvm.sock", Tun: "slimvirt-tun.sock"} {
		r := regs[name]
		if r == nil || r.Endpoint != endpoint || r.Version != pluginapi.Version {
			t.Errorf("registration of %s = %v, want endpoint %s version %s", name, r, endpoint, pluginapi.Version)
		}
	}
	ctx := context.Background()
	kvm, tun := client(t, filepath.Join(dir, "slimvirt-kvm.sock")), client(t, filepath.Join(dir, "slimvirt-tun.sock"))

	t.Run("ListAndWatch", func(t *testing.T) {
		if h, ids := watch(t, kvm)(); h != pluginapi.Healthy || !slices.Equal(ids, []string{"kvm0", "kvm1", "kvm2"}) {
			t.Errorf("kvm on a char device: %s %v, want Healthy kvm0..kvm2", h, ids)
		}
		if h, ids := watch(t, tun)(); h != pluginapi.Unhealthy || len(ids) != 3 {
			t.Errorf("tun on a missing device: %s %v, want 3 Unhealthy", h, ids)
		}
	})
	t.Run("Allocate", func(t *testing.T) {
		resp, err := kvm.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: []string{"kvm0", "kvm2"}}, {DevicesIds: []string{"kvm1"}}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.ContainerResponses) != 2 {
			t.Fatalf("%d container responses, want 2", len(resp.ContainerResponses))
		}
		for _, c := range resp.ContainerResponses {
			if len(c.Devices) != 1 || c.Devices[0].HostPath != "/dev/null" || c.Devices[0].ContainerPath != "/dev/null" || c.Devices[0].Permissions != "rw" {
				t.Errorf("devices = %v, want one /dev/null -> /dev/null rw", c.Devices)
			}
		}
		_, err = kvm.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"kvm3"}}}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("allocating an unknown device: %v, want InvalidArgument", err)
		}
		_, err = tun.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"tun0"}}}})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("allocating a missing device: %v, want FailedPrecondition", err)
		}
	})
	t.Run("trivial calls", func(t *testing.T) {
		opts, err := kvm.GetDevicePluginOptions(ctx, &pluginapi.Empty{})
		if err != nil || opts.PreStartRequired || opts.GetPreferredAllocationAvailable {
			t.Errorf("options = %v, %v; want none", opts, err)
		}
		if _, err := kvm.PreStartContainer(ctx, &pluginapi.PreStartContainerRequest{DevicesIds: []string{"kvm0"}}); err != nil {
			t.Errorf("PreStartContainer: %v", err)
		}
		pref, err := kvm.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
			{AvailableDeviceIDs: []string{"kvm0", "kvm1", "kvm2"}, MustIncludeDeviceIDs: []string{"kvm2"}, AllocationSize: 2}}})
		if err != nil || len(pref.ContainerResponses) != 1 || !slices.Equal(pref.ContainerResponses[0].DeviceIDs, []string{"kvm2", "kvm0"}) {
			t.Errorf("preferred allocation = %v, %v; want [kvm2 kvm0]", pref, err)
		}
	})
}

// TestHealth: the device list follows the device node as it appears, turns into something that
// is not a character device, and comes back.
func TestHealth(t *testing.T) {
	dir, dev := t.TempDir(), filepath.Join(t.TempDir(), "kvm")
	k := startKubelet(t, dir)
	start(t, Config{Dir: dir, DeviceCount: 2, Poll: 20 * time.Millisecond, Resources: []Resource{{Name: KVM, Path: dev}}})
	k.await(t, 1)
	next := watch(t, client(t, filepath.Join(dir, "slimvirt-kvm.sock")))

	steps := []struct {
		name   string
		change func() error
		want   string
	}{
		{"missing", func() error { return nil }, pluginapi.Unhealthy},
		{"char device", func() error { return os.Symlink("/dev/null", dev) }, pluginapi.Healthy},
		{"regular file", func() error { _ = os.Remove(dev); return os.WriteFile(dev, nil, 0o600) }, pluginapi.Unhealthy},
		{"char device again", func() error { _ = os.Remove(dev); return os.Symlink("/dev/zero", dev) }, pluginapi.Healthy},
		{"removed", func() error { return os.Remove(dev) }, pluginapi.Unhealthy},
	}
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatal(err)
		}
		if h, _ := next(); h != s.want {
			t.Fatalf("%s: health %s, want %s", s.name, h, s.want)
		}
	}
}

// TestKubeletRestart: a new kubelet.sock makes the plugins register again, serving again first
// if the kubelet deleted their sockets. Poll is an hour: directory events alone must do it.
func TestKubeletRestart(t *testing.T) {
	for _, tc := range []struct {
		name          string
		deleteSockets bool
	}{
		{"kubelet.sock recreated", false},
		{"kubelet restarted", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			old := startKubelet(t, dir)
			start(t, Config{Dir: dir, DeviceCount: 1, Poll: time.Hour,
				Resources: []Resource{{Name: KVM, Path: "/dev/null"}, {Name: Tun, Path: "/dev/zero"}}})
			old.await(t, 2)

			old.srv.Stop() // closing the listener removes kubelet.sock
			if _, err := os.Stat(filepath.Join(dir, kubeletSocket)); !os.IsNotExist(err) {
				t.Fatalf("kubelet.sock still there: %v", err)
			}
			if tc.deleteSockets {
				for _, s := range []string{"slimvirt-kvm.sock", "slimvirt-tun.sock"} {
					if err := os.Remove(filepath.Join(dir, s)); err != nil {
						t.Fatal(err)
					}
				}
			}
			regs := startKubelet(t, dir).await(t, 2)
			for _, r := range regs {
				h, _ := watch(t, client(t, filepath.Join(dir, r.Endpoint)))()
				if h != pluginapi.Healthy {
					t.Errorf("%s after the restart: %s", r.ResourceName, h)
				}
			}
		})
	}
}

// TestLateKubelet: the plugins wait for a device-plugins directory and a kubelet that are not
// there yet.
func TestLateKubelet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "device-plugins")
	start(t, Config{Dir: dir, DeviceCount: 1, Poll: 20 * time.Millisecond, Resources: []Resource{{Name: KVM, Path: "/dev/null"}}})
	time.Sleep(100 * time.Millisecond)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if r := startKubelet(t, dir).await(t, 1)[KVM]; r == nil || r.Endpoint != "slimvirt-kvm.sock" {
		t.Errorf("registration = %v", r)
	}
}

// TestStop: cancelling Run ends the streams and removes the plugins' sockets, not the kubelet's.
func TestStop(t *testing.T) {
	dir := t.TempDir()
	k := startKubelet(t, dir)
	stop := start(t, Config{Dir: dir, DeviceCount: 1, Poll: time.Hour,
		Resources: []Resource{{Name: KVM, Path: "/dev/null"}, {Name: Tun, Path: "/dev/zero"}}})
	k.await(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client(t, filepath.Join(dir, "slimvirt-kvm.sock")).ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	stop()
	if _, err := stream.Recv(); err == nil {
		t.Error("ListAndWatch stream still open after stop")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{kubeletSocket}) {
		t.Errorf("directory after stop holds %v, want only %s", names, kubeletSocket)
	}
}

func TestNew(t *testing.T) {
	ok := Config{Dir: "/var/lib/kubelet/device-plugins", DeviceCount: 110}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		valid  bool
	}{
		{"defaults", func(*Config) {}, true},
		{"relative dir", func(c *Config) { c.Dir = "device-plugins" }, false},
		{"no devices", func(c *Config) { c.DeviceCount = 0 }, false},
		{"name without domain", func(c *Config) { c.Resources = []Resource{{Name: "kvm", Path: "/dev/kvm"}} }, false},
		{"name with empty domain", func(c *Config) { c.Resources = []Resource{{Name: "/kvm", Path: "/dev/kvm"}} }, false},
		{"invalid name", func(c *Config) { c.Resources = []Resource{{Name: "devices.slimvirt.io/k v m", Path: "/dev/kvm"}} }, false},
		{"relative device", func(c *Config) { c.Resources = []Resource{{Name: KVM, Path: "dev/kvm"}} }, false},
		{"shared socket", func(c *Config) {
			c.Resources = []Resource{{Name: KVM, Path: "/dev/kvm"}, {Name: "example.com/kvm", Path: "/dev/kvm"}}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.change(&cfg)
			p, err := New(cfg)
			if (err == nil) != tc.valid {
				t.Fatalf("New: %v, want valid=%v", err, tc.valid)
			}
			if tc.name == "defaults" && (len(p.plugins) != 2 || p.plugins[0].res.Name != KVM || p.plugins[1].res.Name != Tun || len(p.plugins[0].ids) != 110) {
				t.Errorf("default plugins: %+v", p.plugins)
			}
		})
	}
}
