package launcherwatch

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/runtime/control"
)

// hostile is a launcher whose run directory a test fills as a hostile pod would.
func hostile(t *testing.T) Launcher {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pods", "uid", "volumes", "kubernetes.io~empty-dir", launcherpod.RunVolume)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return Launcher{Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "virt-launcher-x"}}, RunDir: dir, VMI: "x"}
}

// within runs f and fails the test when it has not returned in 5s.
func within[T any](t *testing.T, f func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(5 * time.Second):
		t.Fatal("still blocked after 5s")
	}
	panic("unreachable")
}

// TestReadStatusRefuses: whatever a pod puts in its status file's place other than a small
// regular file is refused at once, with an error saying what it is, and is never read.
func TestReadStatusRefuses(t *testing.T) {
	node := t.TempDir()
	secret := filepath.Join(node, "secret.json")
	if err := os.WriteFile(secret, []byte(`{"phase":"Running","guestMAC":"02:00:00:00:00:99"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		make func(t *testing.T, runDir string) error
		want error
		says string
	}{
		{"fifo", func(_ *testing.T, d string) error { return syscall.Mkfifo(filepath.Join(d, "status.json"), 0o644) },
			ErrNotOwnFile, "a FIFO"},
		{"symlink to a node file", func(_ *testing.T, d string) error { return os.Symlink(secret, filepath.Join(d, "status.json")) },
			ErrNotOwnFile, "a symbolic link"},
		{"relative symlink out of the run directory", func(_ *testing.T, d string) error {
			return os.Symlink("../../../../../../"+filepath.Base(node)+"/secret.json", filepath.Join(d, "status.json"))
		}, ErrNotOwnFile, "a symbolic link"},
		{"directory", func(_ *testing.T, d string) error { return os.Mkdir(filepath.Join(d, "status.json"), 0o755) },
			ErrNotOwnFile, "a directory"},
		{"100 MiB sparse file", func(_ *testing.T, d string) error {
			f, err := os.Create(filepath.Join(d, "status.json"))
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Truncate(100 << 20)
		}, launcherpod.ErrTooLarge, "104857600 bytes"},
		{"garbage", func(_ *testing.T, d string) error {
			return os.WriteFile(filepath.Join(d, "status.json"), []byte(`{"phase":"Running"}{"phase":"Paused"}`), 0o644)
		}, nil, "data after the JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := hostile(t)
			if err := tc.make(t, l.RunDir); err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			st, err := within(t, l.ReadStatus)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("ReadStatus = %+v, want it refused", st)
			}
			if (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("ReadStatus: %v, want %v saying %q", err, tc.want, tc.says)
			}
			t.Logf("refused: %v", err)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
				t.Errorf("refusing it allocated %d bytes: the file was read", grew)
			}
		})
	}
}

// TestReadStatusRefusesDevice: a device node in the status file's place (a pod's container may
// have CAP_MKNOD) is refused without being opened: opening some devices acts on them.
func TestReadStatusRefusesDevice(t *testing.T) {
	testutil.RequireRoot(t, "makes a device node")
	l := hostile(t)
	// /dev/null's numbers: harmless should it be opened after all.
	if err := unix.Mknod(filepath.Join(l.RunDir, "status.json"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if _, err := within(t, l.ReadStatus); !errors.Is(err, ErrNotOwnFile) || !strings.Contains(err.Error(), "a device") {
		t.Fatalf("ReadStatus: %v, want it refused as a device", err)
	}
}

func TestReadStatus(t *testing.T) {
	l := hostile(t)
	if _, err := l.ReadStatus(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no status file yet: %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(l.StatusFile(), []byte(`{"phase":"Running","guestIP":"10.244.0.9"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := l.ReadStatus()
	if err != nil || st.Phase != launcherpod.PhaseRunning || st.GuestIP != "10.244.0.9" {
		t.Fatalf("ReadStatus = %+v, %v", st, err)
	}
}

// serve answers on a unix socket at path with answer; it counts the connections.
func serve(t *testing.T, path string, answer func(net.Conn)) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				_, _ = bufio.NewReader(c).ReadString('\n')
				answer(c)
			}()
		}
	}()
	return &n
}

// TestCall: the launcher's own socket is reached; an endless reply is cut off at the bound
// within the deadline; a socket that is a link to a socket of the node (the kubelet's, the
// container runtime's) is refused without connecting to it.
func TestCall(t *testing.T) {
	t.Run("own socket", func(t *testing.T) {
		l := hostile(t)
		serve(t, filepath.Join(l.RunDir, "control.sock"), func(c net.Conn) { _, _ = c.Write([]byte("ok {\"state\":\"running\"}\n")) })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if out, err := l.Call(ctx, control.Stats); err != nil || out != `{"state":"running"}` {
			t.Fatalf("Call = %q, %v", out, err)
		}
	})
	t.Run("endless reply", func(t *testing.T) {
		l := hostile(t)
		serve(t, filepath.Join(l.RunDir, "control.sock"), func(c net.Conn) {
			chunk := []byte("ok " + strings.Repeat("x", 64<<10))
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := within(t, func() (string, error) { return l.Call(ctx, control.Stats) })
		if !errors.Is(err, control.ErrReplyTooLarge) {
			t.Fatalf("Call: %v, want ErrReplyTooLarge", err)
		}
		t.Logf("cut off after %v: %v", time.Since(start).Round(time.Millisecond), err)
	})
	t.Run("link to a node socket", func(t *testing.T) {
		l := hostile(t)
		nodeSock := filepath.Join(t.TempDir(), "kubelet.sock")
		conns := serve(t, nodeSock, func(c net.Conn) { _, _ = c.Write([]byte("ok {\"state\":\"running\"}\n")) })
		if err := os.Symlink(nodeSock, filepath.Join(l.RunDir, "control.sock")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if out, err := l.Call(ctx, control.Stats); !errors.Is(err, ErrNotOwnFile) {
			t.Fatalf("Call = %q, %v; want it refused as a link", out, err)
		}
		if n := conns.Load(); n != 0 {
			t.Errorf("the node's socket got %d connections", n)
		}
	})
	t.Run("regular file", func(t *testing.T) {
		l := hostile(t)
		if err := os.WriteFile(filepath.Join(l.RunDir, "control.sock"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, err := l.Call(ctx, control.Stats); !errors.Is(err, ErrNotOwnFile) {
			t.Fatalf("Call: %v, want it refused as not a socket", err)
		}
	})
}

// TestDial: the console and VNC sockets are reached like the control socket: the launcher's
// own socket connects; a link to a node socket, a FIFO and a path out of the run directory
// are refused without connecting anywhere.
func TestDial(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t.Run("own socket", func(t *testing.T) {
		l := hostile(t)
		serve(t, filepath.Join(l.RunDir, VNCSocket), func(c net.Conn) { _, _ = c.Write([]byte("RFB 003.008\n")) })
		c, err := l.Dial(ctx, VNCSocket)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("\n"))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "RFB 003.008\n" {
			t.Fatalf("read %q, %v", line, err)
		}
	})
	nodeSock := filepath.Join(t.TempDir(), "node.sock")
	conns := serve(t, nodeSock, func(net.Conn) {})
	for name, plant := range map[string]func(string) error{
		"link to a node socket": func(p string) error { return os.Symlink(nodeSock, p) },
		"fifo":                  func(p string) error { return syscall.Mkfifo(p, 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			l := hostile(t)
			testutil.Must(t, plant(filepath.Join(l.RunDir, ConsoleSocket)))
			if c, err := within(t, func() (net.Conn, error) { return l.Dial(ctx, ConsoleSocket) }); !errors.Is(err, ErrNotOwnFile) {
				if c != nil {
					_ = c.Close()
				}
				t.Fatalf("Dial: %v, want ErrNotOwnFile", err)
			}
		})
	}
	t.Run("path out of the run directory", func(t *testing.T) {
		l := hostile(t)
		if _, err := l.Dial(ctx, "../"+filepath.Base(l.RunDir)+"/"+VNCSocket); !errors.Is(err, ErrNotOwnFile) {
			t.Fatalf("Dial: %v, want ErrNotOwnFile", err)
		}
	})
	if n := conns.Load(); n != 0 {
		t.Errorf("the node's socket got %d connections", n)
	}
}
