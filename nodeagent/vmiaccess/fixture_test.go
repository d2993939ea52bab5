package vmiaccess

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
	"github.com/slimvirt/slimvirt/nodeagent/vmiaccess/testpki"
	"github.com/slimvirt/slimvirt/runtime/console"
	"github.com/slimvirt/slimvirt/runtime/control"
)

// launchers is a node's list of launchers.
type launchers []launcherwatch.Launcher

func (l launchers) List() []launcherwatch.Launcher { return l }

// newLauncher is the launcher of VMI tenant/name, its run directory where the kubelet keeps
// it below a kubelet directory of the test: its host path is longer than a unix socket
// address may be, as on a real node.
func newLauncher(t *testing.T, name string) launcherwatch.Launcher {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "virt-launcher-" + name,
		UID: types.UID("6f0d1c52-3a8e-4f3b-9b7e-" + strings.Repeat("0", 12))}}
	l := launcherwatch.Launcher{Pod: pod, RunDir: launcherwatch.RunDir(filepath.Join(t.TempDir(), "kubelet"), pod), VMI: name}
	testutil.Must(t, os.MkdirAll(l.RunDir, 0o755))
	if n := len(filepath.Join(l.RunDir, launcherwatch.ConsoleSocket)); n <= 108 {
		t.Fatalf("the console socket's path has %d bytes: too short to show the endpoint reaches sockets at any path", n)
	}
	return l
}

// intoRunDir moves the unix socket at path (short enough to bind) to name in l's run
// directory, where it answers as before.
func intoRunDir(t *testing.T, l launcherwatch.Launcher, path, name string) {
	t.Helper()
	testutil.Must(t, os.Rename(path, filepath.Join(l.RunDir, name)))
}

// shortDir is a directory whose paths fit a unix socket address.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "va")
	testutil.Must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// serveConsole runs the launcher's console multiplexer for l: it returns the guest's end of
// the serial port (what QEMU's socket would carry).
func serveConsole(t *testing.T, l launcherwatch.Launcher) (guest net.Conn, mux <-chan struct{}) {
	t.Helper()
	dir := shortDir(t)
	qemu, err := net.Listen("unix", filepath.Join(dir, "serial0"))
	testutil.Must(t, err)
	t.Cleanup(func() { _ = qemu.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	m := &console.Mux{QEMUSocket: filepath.Join(dir, "serial0"), ClientSocket: filepath.Join(dir, "console.sock"), Lines: io.Discard}
	testutil.Must(t, m.Connect(ctx))
	guest, err = qemu.Accept()
	testutil.Must(t, err)
	done := make(chan struct{})
	go func() {
		if err := m.Serve(ctx); err != nil {
			t.Errorf("console multiplexer: %v", err)
		}
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = guest.Close()
	})
	testutil.WaitFor(t, 5*time.Second, "console socket", func() bool {
		_, err := os.Stat(m.ClientSocket)
		return err == nil
	})
	intoRunDir(t, l, m.ClientSocket, launcherwatch.ConsoleSocket)
	return guest, done
}

// serveVNC runs QEMU with its VNC display on a unix socket in l's run directory.
func serveVNC(t *testing.T, l launcherwatch.Launcher) {
	t.Helper()
	sock := filepath.Join(shortDir(t), "vnc")
	cmd := exec.Command("qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-S", "-vnc", "unix:"+sock)
	cmd.Stderr = os.Stderr
	testutil.Must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // killed: its error says so
	})
	testutil.WaitFor(t, 10*time.Second, "QEMU's VNC socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	intoRunDir(t, l, sock, launcherwatch.VNCSocket)
}

// controlSocket serves the launcher's control protocol in l's run directory with h.
func controlSocket(t *testing.T, l launcherwatch.Launcher, h control.Handler) {
	t.Helper()
	path := filepath.Join(shortDir(t), "control.sock")
	ln, err := control.Listen(path)
	testutil.Must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		control.Serve(ctx, ln, h)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	intoRunDir(t, l, path, filepath.Base(launcherpod.ControlSocket))
}

// endpoint is a running access endpoint and the aggregated server's way to it.
type endpoint struct {
	addr    string
	ca      *testpki.CA
	certDir string
	client  *http.Client
}

// start serves the endpoint for ls on a loopback port, with certificates of a new CA.
func start(t *testing.T, ls ...launcherwatch.Launcher) *endpoint {
	t.Helper()
	ca := testpki.NewCA(t, "slimvirt-ca")
	dir := t.TempDir()
	testpki.WriteSecret(t, dir, ca)
	s, err := New(Config{CertDir: dir, Node: "node-1", Launchers: launchers(ls), Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	testutil.Must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		testutil.Must(t, <-done)
	})
	return &endpoint{addr: ln.Addr().String(), ca: ca, certDir: dir, client: httpClient(testpki.ClientConfig(ca, ca.Client(t)))}
}

func httpClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

func (e *endpoint) url(scheme, vmi, action string) string {
	return scheme + "://" + e.addr + subresources.NodePath("tenant", vmi, action)
}

// do sends method to the VMI's action and returns the status code and the body.
func (e *endpoint) do(t *testing.T, method, vmi, action string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.url("https", vmi, action), nil)
	testutil.Must(t, err)
	resp, err := e.client.Do(req)
	testutil.Must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	testutil.Must(t, err)
	return resp.StatusCode, string(b)
}

// status decodes a failure's metav1.Status.
func status(t *testing.T, body string) metav1.Status {
	t.Helper()
	var s metav1.Status
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Kind != "Status" {
		t.Fatalf("not a Status: %q (%v)", body, err)
	}
	return s
}

// dial opens a websocket to the VMI's action offering protocols.
func (e *endpoint) dial(t *testing.T, vmi, action string, protocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, e.url("wss", vmi, action), &websocket.DialOptions{HTTPClient: e.client, Subprotocols: protocols})
	if c != nil {
		t.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, resp, err
}

// readUntil reads binary messages from c until they hold want; it returns what it read.
func readUntil(t *testing.T, c *websocket.Conn, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got strings.Builder
	for !strings.Contains(got.String(), want) {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read %q so far, waiting for %q: %v", got.String(), want, err)
		}
		if typ != websocket.MessageBinary {
			t.Fatalf("a %v message, want binary", typ)
		}
		got.Write(b)
	}
	return got.String()
}

// recorder records the commands a control socket got.
type recorder struct {
	mu   sync.Mutex
	cmds []string
}

func (r *recorder) add(cmd string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds = append(r.cmds, cmd)
}

func (r *recorder) got() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.cmds, ",")
}
