package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

const conflist = `{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.244.0.0/24"}}]}` + "\n"

// kubelet is the kubelet's side of device plugin registration: it records the resource names.
type kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	names chan string
}

func (k *kubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.names <- r.ResourceName
	return &pluginapi.Empty{}, nil
}

// TestBinary runs slimvirt-node as the DaemonSet does: it installs, logs JSON, and with
// --uninstall-on-exit restores the node on SIGTERM; `uninstall-cni` does the same on demand.
// Its device plugins register with a kubelet that shows up after the CNI plugin is installed,
// and remove their sockets on SIGTERM.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "slimvirt-node")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	cniBin, confDir, state := filepath.Join(dir, "opt-cni-bin"), filepath.Join(dir, "net.d"), filepath.Join(dir, "state")
	devicePlugins := filepath.Join(dir, "device-plugins")
	for _, d := range []string{cniBin, confDir, devicePlugins} {
		testutil.Must(t, os.MkdirAll(d, 0o755))
	}
	conf := filepath.Join(confDir, "10-k8s.conflist")
	testutil.Must(t, os.WriteFile(conf, []byte(conflist), 0o644))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "key"), []byte("k"), 0o600))
	args := []string{"--cni-bin-dir", cniBin, "--cni-conf-dir", confDir, "--cni-binary", bin,
		"--state-dir", state, "--signing-key-file", filepath.Join(dir, "key"), "--device-plugin-dir", devicePlugins}

	installed := func() bool {
		b, _ := os.ReadFile(conf)
		_, err := os.Stat(filepath.Join(cniBin, "slimvirt"))
		return strings.Contains(string(b), `"slimvirt"`) && err == nil
	}
	for _, mode := range []string{"sigterm", "uninstall-cni"} {
		t.Run(mode, func(t *testing.T) {
			runArgs := args
			if mode == "sigterm" {
				runArgs = append(runArgs, "--uninstall-on-exit")
			}
			cmd := exec.Command(bin, runArgs...)
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			logs := make(chan string, 100)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					logs <- sc.Text()
				}
				close(logs)
			}()
			deadline := time.Now().Add(10 * time.Second)
			for !installed() {
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatal("not installed within 10s")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if mode == "sigterm" {
				registered(t, devicePlugins)
				testutil.Must(t, cmd.Process.Signal(syscall.SIGTERM))
				if err := cmd.Wait(); err != nil {
					t.Errorf("exit after SIGTERM: %v", err)
				}
				if entries, _ := os.ReadDir(devicePlugins); len(entries) != 1 || entries[0].Name() != "kubelet.sock" {
					t.Errorf("device plugin directory after SIGTERM holds %v, want only kubelet.sock", entries)
				}
			} else {
				_ = cmd.Process.Kill()
				_ = cmd.Wait() // killed: its error says so
				if out, err := exec.Command(bin, append([]string{"uninstall-cni"}, args...)...).CombinedOutput(); err != nil {
					t.Fatalf("uninstall-cni: %v: %s", err, out)
				}
			}
			if b, _ := os.ReadFile(conf); string(b) != conflist {
				t.Errorf("conflist after uninstall:\n%s\nwant the original", b)
			}
			if _, err := os.Stat(filepath.Join(cniBin, "slimvirt")); !os.IsNotExist(err) {
				t.Errorf("plugin binary still installed: %v", err)
			}
			for l := range logs {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil || m["msg"] == nil {
					t.Errorf("log line is not slog JSON: %q", l)
				}
			}
		})
	}
}

// registered starts a kubelet in dir and waits for both device plugins to register with it.
func registered(t *testing.T, dir string) {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k, srv := &kubelet{names: make(chan string, 4)}, grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, k)
	go func() { _ = srv.Serve(lis) }()
	// Keep the socket: the check after SIGTERM tells it from the plugins' sockets.
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	t.Cleanup(srv.Stop)
	var names []string
	for len(names) < 2 {
		select {
		case n := <-k.names:
			names = append(names, n)
		case <-time.After(10 * time.Second):
			t.Fatalf("registered within 10s: %v, want the kvm and tun plugins", names)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"devices.slimvirt.io/kvm", "devices.slimvirt.io/tun"}) {
		t.Errorf("registered %v", names)
	}
}
