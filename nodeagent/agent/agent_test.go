package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/cni/install"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/nodeagent/deviceplugin"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
	"github.com/slimvirt/slimvirt/nodeagent/vmiaccess/testpki"
)

const conflist = `{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.244.0.0/24"}}]}` + "\n"

// node is a node's CNI and kubelet directories for one test.
type node struct {
	dir, cniBin, conf, state string
}

func newNode(t *testing.T) node {
	t.Helper()
	dir := t.TempDir()
	n := node{dir: dir, cniBin: filepath.Join(dir, "opt-cni-bin"), conf: filepath.Join(dir, "net.d", "10-k8s.conflist"), state: filepath.Join(dir, "state")}
	for _, d := range []string{n.cniBin, filepath.Dir(n.conf), filepath.Join(dir, "device-plugins")} {
		testutil.Must(t, os.MkdirAll(d, 0o755))
	}
	testutil.Must(t, os.WriteFile(n.conf, []byte(conflist), 0o644))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "plugin"), []byte("plugin binary"), 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(dir, "key"), []byte("k"), 0o600))
	return n
}

func (n node) config() Config {
	return Config{
		CNI: install.Config{CNIBinDir: n.cniBin, CNIConfDir: filepath.Dir(n.conf), SourceBinary: filepath.Join(n.dir, "plugin"),
			StateDir: n.state, SigningKeyFile: filepath.Join(n.dir, "key")},
		DevicePlugins: deviceplugin.Config{Dir: filepath.Join(n.dir, "device-plugins"), DeviceCount: 4},
		KubeletDir:    filepath.Join(n.dir, "kubelet"),
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
}

// installed says whether the plugin is chained into the node's conflist and its binary is in
// place.
func (n node) installed() bool {
	b, _ := os.ReadFile(n.conf)
	_, err := os.Stat(filepath.Join(n.cniBin, install.PluginType))
	return strings.Contains(string(b), `"slimvirt"`) && err == nil
}

func TestNew(t *testing.T) {
	n := newNode(t)
	a, err := New(n.config())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if got, want := a.cfg.DevicePlugins.SeedDir, filepath.Join(n.state, "launcher"); got != want {
		t.Errorf("device plugins offer the seed %s, want %s", got, want)
	}
	if a.cfg.CNI.Logger == nil || a.cfg.DevicePlugins.Logger == nil {
		t.Error("the agent's logger is not passed on")
	}
	tests := []struct {
		name   string
		change func(*Config)
		says   []string
	}{
		{"relative state dir", func(c *Config) { c.CNI.StateDir = "state" }, []string{"state-dir"}},
		{"no devices", func(c *Config) { c.DevicePlugins.DeviceCount = 0 }, []string{"device-count"}},
		{"both", func(c *Config) { c.CNI.CNIBinDir, c.DevicePlugins.Dir = "", "" }, []string{"cni-bin-dir", "device-plugin-dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := n.config()
			tt.change(&cfg)
			_, err := New(cfg)
			for _, s := range tt.says {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("New = %v, want an error naming %s", err, s)
				}
			}
		})
	}
}

// noLaunchers is a node without launcher pods.
type noLaunchers struct{}

func (noLaunchers) List() []launcherwatch.Launcher { return nil }

func TestMetricsHandler(t *testing.T) {
	srv := httptest.NewServer(metricsHandler(noLaunchers{}, "node-1", slog.New(slog.DiscardHandler)))
	defer srv.Close()
	body := get(t, srv.URL+"/metrics")
	for _, want := range []string{`slimvirt_node_launcher_scrape_errors{node="node-1"} 0`, "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	testutil.Must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	testutil.Must(t, err)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

// TestRun runs the agent against a real API server, as its DaemonSet runs it: it chains the
// plugin and serves per-VM metrics; stopped while its DaemonSet exists (a restart) it leaves
// the node as it is, stopped after the DaemonSet is deleted (helm uninstall) it restores the
// conflist and removes the plugin and the launchers' seed.
func TestRun(t *testing.T) {
	env, err := testenv.Start("nodeagent")
	testutil.Must(t, err)
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	testutil.Must(t, env.Namespace(ctx, "slimvirt"))
	labels := map[string]string{"app": "node"}
	_, err = env.Clientset.AppsV1().DaemonSets("slimvirt").Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "slimvirt-node", Namespace: "slimvirt"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "node", Image: "slimvirt.io/node:dev"}}},
			},
		},
	}, metav1.CreateOptions{})
	testutil.Must(t, err)

	n := newNode(t)
	cfg := n.config()
	cfg.API, cfg.NodeName, cfg.Namespace, cfg.RemovalDaemonSet = env.Config, "node-1", "slimvirt", "slimvirt-node"
	cfg.MetricsAddr, cfg.AccessAddr, cfg.AccessCertDir = freeAddr(t), freeAddr(t), t.TempDir()
	ca := testpki.NewCA(t, "slimvirt-ca")
	testpki.WriteSecret(t, cfg.AccessCertDir, ca)
	seed := SeedDir(n.state)
	testutil.Must(t, os.MkdirAll(seed, 0o755))
	testutil.Must(t, os.WriteFile(filepath.Join(seed, "slimvirt-diskcopy"), []byte("copier"), 0o755))

	stop := start(t, cfg)
	testutil.WaitFor(t, 10*time.Second, "plugin chained", n.installed)
	if m := metrics(t, cfg.MetricsAddr); !strings.Contains(m, `slimvirt_node_launcher_scrape_errors{node="node-1"} 0`) {
		t.Errorf("metrics of node-1 lack the scrape errors:\n%s", m)
	}
	access(t, cfg.AccessAddr, ca)
	testutil.Must(t, stop())
	if !n.installed() {
		t.Error("stopped for a restart, the agent took the plugin out")
	}
	if _, err := os.Stat(filepath.Join(seed, "slimvirt-diskcopy")); err != nil {
		t.Errorf("stopped for a restart, the agent removed the seed: %v", err)
	}

	// Without its certificates the agent runs without the access endpoint, and serves it once
	// they come (the controller makes their Secret, maybe after the agent started).
	cfg.AccessCertDir = t.TempDir()
	stop = start(t, cfg)
	metrics(t, cfg.MetricsAddr)
	if c, err := net.Dial("tcp", cfg.AccessAddr); err == nil {
		_ = c.Close()
		t.Error("the access endpoint listens without its certificates")
	}
	testpki.WriteSecret(t, cfg.AccessCertDir, ca)
	access(t, cfg.AccessAddr, ca)
	testutil.Must(t, env.Clientset.AppsV1().DaemonSets("slimvirt").Delete(ctx, "slimvirt-node", metav1.DeleteOptions{}))
	testutil.Must(t, stop())
	if b, _ := os.ReadFile(n.conf); string(b) != conflist {
		t.Errorf("conflist after helm uninstall:\n%s\nwant the original", b)
	}
	if _, err := os.Stat(filepath.Join(n.cniBin, install.PluginType)); !os.IsNotExist(err) {
		t.Errorf("plugin binary still installed: %v", err)
	}
	if _, err := os.Stat(seed); !os.IsNotExist(err) {
		t.Errorf("the launchers' seed is still there: %v", err)
	}
}

// access waits until the agent serves VMI access on addr to the aggregated server's client
// certificate of ca: it answers 404 for a VMI not on the node.
func access(t *testing.T, addr string, ca *testpki.CA) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: testpki.ClientConfig(ca, ca.Client(t))}}
	url := "https://" + addr + subresources.NodePath("tenant", "vm1", subresources.GuestOSInfo)
	testutil.WaitFor(t, 10*time.Second, "VMI access served", func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusNotFound && strings.Contains(string(b), "not running on node node-1")
	})
}

// metrics waits until the agent serves its metrics on addr, and returns them.
func metrics(t *testing.T, addr string) string {
	t.Helper()
	var body string
	testutil.WaitFor(t, 10*time.Second, "per-VM metrics served", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return body
}

// start runs the agent until the returned stop is called, which returns Run's error.
func start(t *testing.T, cfg Config) (stop func() error) {
	t.Helper()
	a, err := New(cfg)
	testutil.Must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			t.Fatal("the agent did not stop within 15s")
			return nil
		}
	}
}

// freeAddr is a loopback address no one listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	addr := l.Addr().String()
	testutil.Must(t, l.Close())
	return addr
}
