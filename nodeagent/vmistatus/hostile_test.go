package vmistatus_test

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
	"github.com/slimvirt/slimvirt/nodeagent/vmimetrics"
	"github.com/slimvirt/slimvirt/nodeagent/vmistatus"
)

// lockedLog is a log a test reads while the reporter writes it.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// fakePod makes a pod on the node labelled as a launcher, with the readiness gate, and the
// given owner references, as a tenant who may create pods can; it says Running in its run
// directory and serves a control socket there that counts its connections.
func (f *fixture) fakePod(ctx context.Context, name string, owners []metav1.OwnerReference) (*corev1.Pod, *atomic.Int32) {
	t := f.t
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", OwnerReferences: owners,
			Labels: map[string]string{launcherpod.LabelApp: launcherpod.AppLauncher, launcherpod.LabelVMI: name}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "fake", Image: "toolbox"}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: launcherpod.ConditionDomainRunning}}},
	}
	testutil.Must(t, f.c.Create(ctx, pod))
	testutil.Must(t, os.MkdirAll(launcherwatch.RunDir(f.kubelet, pod), 0o755))
	f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:66:66:66:66:66", GuestIP: "10.66.0.1"})
	// The run directory's path is too long for a socket address: bind elsewhere, then move
	// the socket into place.
	short := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", short)
	testutil.Must(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	testutil.Must(t, os.Rename(short, filepath.Join(launcherwatch.RunDir(f.kubelet, pod), "control.sock")))
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			_, _ = bufio.NewReader(c).ReadString('\n')
			_, _ = c.Write([]byte(`ok {"state":"running","vcpus":64}` + "\n"))
			_ = c.Close()
		}
	}()
	return pod, &conns
}

// TestReporterIgnoresPodsNoVMINames: pods labelled as launchers that no VMI names as its
// launcher, one without an owner and one claiming a VMI that has another launcher, are
// ignored: their readiness gate is never set, their status never reaches a VMI, the metrics
// never ask them, and each is logged once.
func TestReporterIgnoresPodsNoVMINames(t *testing.T) {
	f, env, ctx := newFixture(t, "vmistatus-ignore")
	_, named := f.vmiWithPod(ctx, "vm1", node, v1.Scheduled)
	victim, victimPod := f.vmiWithPod(ctx, "victim", node, v1.Scheduled)
	f.launcherSays(named, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:01"})
	f.launcherSays(victimPod, launcherpod.Status{Phase: launcherpod.PhaseStarting})
	stray, strayConns := f.fakePod(ctx, "stray", nil)
	impostor, impostorConns := f.fakePod(ctx, "impostor", []metav1.OwnerReference{{APIVersion: v1.GroupVersion.String(),
		Kind: "VirtualMachineInstance", Name: victim.Name, UID: victim.UID, Controller: ptr.To(true)}})

	logs := &lockedLog{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rctx, cancel := context.WithCancel(ctx)
	w := launcherwatch.New(env.Clientset, node, f.kubelet)
	w.Log = log
	testutil.Must(t, w.Start(rctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&vmistatus.Reporter{Client: f.c, Launchers: w, Interval: 100 * time.Millisecond, Log: log}).Run(rctx)
	}()
	defer func() { cancel(); <-done }()

	f.waitFor(ctx, "vm1", "Running", func(v *v1.VirtualMachineInstance) bool { return v.Status.Phase == v1.Running })
	f.waitGate(ctx, named, corev1.ConditionTrue)
	time.Sleep(time.Second) // ten more passes

	if g := f.gate(ctx, stray); g != "" {
		t.Errorf("the agent set the readiness gate of a pod no VMI owns to %q", g)
	}
	if g := f.gate(ctx, impostor); g != "" {
		t.Errorf("the agent set the readiness gate of a pod its VMI does not name to %q", g)
	}
	if v := f.get(ctx, "victim"); v.Status.Phase != v1.Scheduled || len(v.Status.Interfaces) != 0 {
		t.Errorf("the impostor's status reached the VMI: phase %s, interfaces %+v", v.Status.Phase, v.Status.Interfaces)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(&vmimetrics.Collector{Source: w, Node: node, Log: log})
	mfs, err := reg.Gather()
	testutil.Must(t, err)
	var scraped []string
	for _, mf := range mfs {
		if mf.GetName() != "slimvirt_vmi_info" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "name" {
					scraped = append(scraped, l.GetValue())
				}
			}
		}
	}
	if n := strayConns.Load() + impostorConns.Load(); n != 0 {
		t.Errorf("a scrape connected %d times to the control sockets of pods no VMI names (metrics: %v)", n, scraped)
	}
	for _, name := range []string{"stray", "impostor"} {
		if n := logs.count("pod=default/" + name); n != 1 {
			t.Errorf("%s logged %d times, want once", name, n)
		}
	}
}

// TestReporterHostileStatusFiles: launchers whose pod put a FIFO, a 100 MiB file or a link to
// a node file where their status file goes (anyone who may exec into a launcher pod can) do
// not keep the other launchers of the node from being reported, and the node file's content
// is never reported.
func TestReporterHostileStatusFiles(t *testing.T) {
	f, env, ctx := newFixture(t, "vmistatus-hostile")
	nodeFile := filepath.Join(t.TempDir(), "node.json")
	testutil.Must(t, os.WriteFile(nodeFile, []byte(`{"phase":"Running","guestMAC":"02:99:99:99:99:99"}`), 0o600))
	bad := map[string]func(path string) error{
		"a-fifo": func(p string) error { return syscall.Mkfifo(p, 0o644) },
		"a-huge": func(p string) error {
			fh, err := os.Create(p)
			if err != nil {
				return err
			}
			defer fh.Close()
			return fh.Truncate(100 << 20)
		},
		"a-link": func(p string) error { return os.Symlink(nodeFile, p) },
	}
	var fifo string
	for name, plant := range bad {
		_, pod := f.vmiWithPod(ctx, name, node, v1.Scheduled)
		path := launcherwatch.Launcher{Pod: pod, RunDir: launcherwatch.RunDir(f.kubelet, pod)}.StatusFile()
		testutil.Must(t, plant(path))
		if name == "a-fifo" {
			fifo = path
		}
	}
	_, good := f.vmiWithPod(ctx, "vm-good", node, v1.Scheduled)
	f.launcherSays(good, launcherpod.Status{Phase: launcherpod.PhaseStarting})
	stop := f.startReporter(ctx, env)
	t.Cleanup(stop)
	// Frees a reader stuck on the FIFO before the reporter is stopped, so that the test ends
	// even when it fails.
	t.Cleanup(func() {
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
	})

	time.Sleep(500 * time.Millisecond)
	f.launcherSays(good, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:01"})
	f.waitFor(ctx, "vm-good", "Running beside the hostile launchers", func(v *v1.VirtualMachineInstance) bool {
		return v.Status.Phase == v1.Running
	})
	for name := range bad {
		if v := f.get(ctx, name); v.Status.Phase != v1.Scheduled || len(v.Status.Interfaces) != 0 {
			t.Errorf("%s: phase %s, interfaces %+v; want nothing reported", name, v.Status.Phase, v.Status.Interfaces)
		}
	}
}
