// Package nettest builds the pieces the network module's root tests run on: named network
// namespaces (removed after the test and, when a killed run left them, before the next one), the
// reference CNI plugins next to ours, and a cluster network made by libcni.
package nettest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/slimvirt/slimvirt/internal/testutil"
)

// Prefix starts the name of every netns the tests make.
const Prefix = "svcni-"

// RefPluginsVersion is the containernetworking/plugins release the tests chain ours after.
const RefPluginsVersion = "v1.9.1"

// RemoveStale deletes the namespaces an earlier, killed run left: those whose test process is
// gone. Other test processes (other packages, other checkouts) may be running at the same time
// on the machine; their namespaces are left alone.
func RemoveStale() error {
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), Prefix) || ownerAlive(e) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "delete", e.Name()).CombinedOutput(); err != nil {
			return fmt.Errorf("delete stale netns %s: %w: %s", e.Name(), err, out)
		}
	}
	return nil
}

// ownerAlive says whether the process named in a netns's name (Prefix<pid>-...) still runs. A
// name without a pid (an older run's) counts as alive for an hour.
func ownerAlive(e os.DirEntry) bool {
	pidText, _, _ := strings.Cut(strings.TrimPrefix(e.Name(), Prefix), "-")
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		info, err := e.Info()
		return err != nil || time.Since(info.ModTime()) < time.Hour
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// NewNS makes a named netns (loopback up) removed when the test ends.
func NewNS(t testing.TB, role string) ns.NetNS {
	t.Helper()
	testutil.RequireRoot(t, "network namespaces")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := fmt.Sprintf("%s%d-%s-%s", Prefix, os.Getpid(), role, hex.EncodeToString(b))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("add netns %s: %v: %s", name, err, out)
	}
	netns, err := ns.GetNS("/var/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = netns.Close()
		_ = exec.Command("ip", "netns", "delete", name).Run()
	})
	Run(t, netns, "ip", "link", "set", "lo", "up")
	return netns
}

// Run runs a command in netns and fails the test on error; it returns the output.
func Run(t testing.TB, netns ns.NetNS, name string, args ...string) string {
	t.Helper()
	out, err := Exec(netns, name, args...)
	if err != nil {
		t.Fatalf("%s %s in %s: %v: %s", name, strings.Join(args, " "), netns.Path(), err, out)
	}
	return out
}

// Exec runs a command in netns (nsenter keeps the mount namespace, unlike ip netns exec).
func Exec(netns ns.NetNS, name string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + netns.Path(), name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Main runs a test binary's tests: stale namespaces of a killed run are removed first, the
// plugin and the launcher side of the VM network are built from this tree once for the run
// (unless SLIMVIRT_CNI_BINARY and SLIMVIRT_LAUNCHERNET_BINARY name them) and removed after.
func Main(m interface{ Run() int }) int {
	if os.Geteuid() != 0 {
		return m.Run()
	}
	if err := RemoveStale(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var built []string
	defer func() {
		for _, p := range built {
			_ = os.Remove(p)
		}
	}()
	// The launcher side runs as the launcher's uid: its binary sits in the world-readable
	// temporary directory, not in the go test build directory (root's, mode 0700).
	for _, b := range []struct{ env, name, pkg string }{
		{"SLIMVIRT_CNI_BINARY", "slimvirt-cni", "github.com/slimvirt/slimvirt/cni/cmd/slimvirt-cni"},
		{"SLIMVIRT_LAUNCHERNET_BINARY", "launchernet", "github.com/slimvirt/slimvirt/cni/internal/nettest/launchernet"},
	} {
		if os.Getenv(b.env) != "" {
			continue
		}
		path := filepath.Join(os.TempDir(), fmt.Sprintf("%s-test-%d", b.name, os.Getpid()))
		cmd := exec.Command("go", "build", "-o", path, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v: %s\n", b.name, err, out)
			return 1
		}
		built = append(built, path)
		if err := os.Setenv(b.env, path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// PluginDir returns a directory holding the reference plugins (bridge, ptp, host-local,
// loopback) and slimvirt built from this tree, building what is missing.
func PluginDir(t testing.TB) string {
	t.Helper()
	ref := os.Getenv("SLIMVIRT_CNI_REF_PLUGINS")
	if ref == "" {
		cache := os.Getenv("SLIMVIRT_CACHE")
		if cache == "" {
			cache = "/var/cache/slimvirt"
		}
		ref = filepath.Join(cache, "cni-test-plugins", RefPluginsVersion)
	}
	want := []string{"bridge", "ptp", "host-local", "loopback"}
	missing := false
	for _, p := range want {
		if _, err := os.Stat(filepath.Join(ref, p)); err != nil {
			missing = true
		}
	}
	if missing {
		args := []string{"install"}
		for _, p := range []string{"main/bridge", "main/ptp", "ipam/host-local", "main/loopback"} {
			args = append(args, "github.com/containernetworking/plugins/plugins/"+p+"@"+RefPluginsVersion)
		}
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "GOBIN="+ref, "CGO_ENABLED=0", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build reference plugins into %s: %v: %s", ref, err, out)
		}
	}
	dir := t.TempDir()
	for _, p := range want {
		if err := os.Symlink(filepath.Join(ref, p), filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	ours := os.Getenv("SLIMVIRT_CNI_BINARY")
	if ours == "" {
		t.Fatal("SLIMVIRT_CNI_BINARY is not set: run the tests through nettest.Main")
	}
	if err := os.Symlink(ours, filepath.Join(dir, "slimvirt")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Chain drives a conflist with libcni from inside the "host" netns (the reference plugins make
// their bridge and veths in the netns they run in).
type Chain struct {
	Host     ns.NetNS
	CNI      *libcni.CNIConfig
	List     *libcni.NetworkConfigList
	CacheDir string
}

// NewChain parses conflist JSON.
func NewChain(t testing.TB, host ns.NetNS, pluginDir string, conflist []byte) *Chain {
	t.Helper()
	list, err := libcni.NetworkConfFromBytes(conflist)
	if err != nil {
		t.Fatalf("parse conflist: %v\n%s", err, conflist)
	}
	cache := t.TempDir()
	return &Chain{Host: host, CNI: libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, cache, nil), List: list, CacheDir: cache}
}

// WithList returns a chain for another conflist sharing this one's cache (a list with the same
// name and only slimvirt runs only our plugin on the cached result).
func (c *Chain) WithList(t testing.TB, conflist []byte) *Chain {
	t.Helper()
	list, err := libcni.NetworkConfFromBytes(conflist)
	if err != nil {
		t.Fatalf("parse conflist: %v", err)
	}
	return &Chain{Host: c.Host, CNI: c.CNI, List: list, CacheDir: c.CacheDir}
}

// Pod is one pod's runtime arguments.
type Pod struct {
	Namespace, Name, ContainerID string
	Netns                        ns.NetNS
	Annotations                  map[string]string
	// UID is passed as K8S_POD_UID, as containerd does, when set.
	UID string
}

// RuntimeConf is what containerd would pass for pod p.
func (p Pod) RuntimeConf() *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
		},
		CapabilityArgs: map[string]interface{}{"io.kubernetes.cri.pod-annotations": p.Annotations},
	}
	if p.UID != "" {
		rt.Args = append(rt.Args, [2]string{"K8S_POD_UID", p.UID})
	}
	if p.Netns != nil {
		rt.NetNS = p.Netns.Path()
	}
	return rt
}

func (c *Chain) in(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return c.Host.Do(func(ns.NetNS) error { return f() })
}

// Add runs ADD for the whole list.
func (c *Chain) Add(p Pod) (*current.Result, error) {
	res, err := c.AddRaw(p)
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// AddRaw runs ADD and returns the result in the version the last plugin printed.
func (c *Chain) AddRaw(p Pod) (types.Result, error) {
	var res types.Result
	err := c.in(func() error {
		var err error
		res, err = c.CNI.AddNetworkList(context.Background(), c.List, p.RuntimeConf())
		return err
	})
	return res, err
}

// Del runs DEL for the whole list.
func (c *Chain) Del(p Pod) error {
	return c.in(func() error { return c.CNI.DelNetworkList(context.Background(), c.List, p.RuntimeConf()) })
}

// Check runs CHECK for the whole list.
func (c *Chain) Check(p Pod) error {
	return c.in(func() error { return c.CNI.CheckNetworkList(context.Background(), c.List, p.RuntimeConf()) })
}

// GC runs GC with the given valid attachments.
func (c *Chain) GC(valid ...types.GCAttachment) error {
	return c.in(func() error {
		return c.CNI.GCNetworkList(context.Background(), c.List, &libcni.GCArgs{ValidAttachments: valid})
	})
}

// Status runs STATUS.
func (c *Chain) Status() error {
	return c.in(func() error { return c.CNI.GetStatusNetworkList(context.Background(), c.List) })
}

// MustJSON marshals v.
func MustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Fetch GETs url with a connection made in netns.
func Fetch(netns ns.NetNS, url string) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := netns.Do(func(ns.NetNS) error {
				var err error
				conn, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// ExecPlugin runs the plugin binary name from dir directly, as a runtime would, and returns its
// stdout.
func ExecPlugin(dir, name, command, netns, containerID, cniArgs string, stdin []byte) ([]byte, error) {
	cmd := exec.Command(filepath.Join(dir, name))
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+netns,
		"CNI_IFNAME=eth0", "CNI_PATH="+dir, "CNI_ARGS="+cniArgs)
	cmd.Stdin = strings.NewReader(string(stdin))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s%s", name, command, err, out, stderr.String())
	}
	return out, nil
}
