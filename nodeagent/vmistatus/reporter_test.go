package vmistatus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
	"github.com/slimvirt/slimvirt/nodeagent/vmistatus"
)

const node = "node-a"

// fixture is a VMI with a launcher pod on a node, as the controller and the scheduler leave
// them, and the pod's run directory on the node.
type fixture struct {
	t       *testing.T
	c       client.Client
	kubelet string
}

func (f *fixture) vmiWithPod(ctx context.Context, name, nodeName string, phase v1.VirtualMachineInstancePhase) (*v1.VirtualMachineInstance, *corev1.Pod) {
	return f.vmiWithVolumes(ctx, name, nodeName, phase)
}

// vmiWithVolumes is vmiWithPod for a VMI with a disk on each of vols.
func (f *fixture) vmiWithVolumes(ctx context.Context, name, nodeName string, phase v1.VirtualMachineInstancePhase, vols ...v1.Volume) (*v1.VirtualMachineInstance, *corev1.Pod) {
	t := f.t
	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{
			Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}},
			Volumes: vols},
	}
	for _, vol := range vols {
		vmi.Spec.Domain.Devices.Disks = append(vmi.Spec.Domain.Devices.Disks, v1.Disk{Name: vol.Name, Disk: &v1.DiskTarget{}})
	}
	testutil.Must(t, f.c.Create(ctx, vmi))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-" + name, Namespace: "default",
			Labels: map[string]string{launcherpod.LabelApp: launcherpod.AppLauncher, launcherpod.LabelVMI: name},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1.GroupVersion.String(), Kind: "VirtualMachineInstance",
				Name: name, UID: vmi.UID, Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: launcherpod.ComputeContainer, Image: "launcher"}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: launcherpod.ConditionDomainRunning}}},
	}
	testutil.Must(t, f.c.Create(ctx, pod))
	before := vmi.DeepCopy()
	vmi.Status = v1.VirtualMachineInstanceStatus{Phase: phase, LauncherPod: pod.Name, NodeName: nodeName}
	testutil.Must(t, f.c.Status().Patch(ctx, vmi, client.MergeFrom(before)))
	testutil.Must(t, os.MkdirAll(launcherwatch.RunDir(f.kubelet, pod), 0o755))
	return vmi, pod
}

// launcherSays writes the status file as the launcher does.
func (f *fixture) launcherSays(pod *corev1.Pod, st launcherpod.Status) {
	b, _ := json.Marshal(st)
	f.launcherWrites(pod, b)
}

// launcherWrites puts b in place as the status file, as the launcher (or its pod) can.
func (f *fixture) launcherWrites(pod *corev1.Pod, b []byte) {
	path := launcherwatch.Launcher{Pod: pod, RunDir: launcherwatch.RunDir(f.kubelet, pod)}.StatusFile()
	testutil.Must(f.t, os.WriteFile(path+".tmp", b, 0o644))
	testutil.Must(f.t, os.Rename(path+".tmp", path))
}

// gate is the pod's readiness gate condition status, "" when it has none.
func (f *fixture) gate(ctx context.Context, pod *corev1.Pod) corev1.ConditionStatus {
	p := &corev1.Pod{}
	testutil.Must(f.t, f.c.Get(ctx, client.ObjectKeyFromObject(pod), p))
	for _, c := range p.Status.Conditions {
		if c.Type == launcherpod.ConditionDomainRunning {
			return c.Status
		}
	}
	return ""
}

func (f *fixture) waitGate(ctx context.Context, pod *corev1.Pod, want corev1.ConditionStatus) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.gate(ctx, pod) != want {
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: readiness gate is %q, want %q", pod.Name, f.gate(ctx, pod), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fixture) get(ctx context.Context, name string) *v1.VirtualMachineInstance {
	vmi := &v1.VirtualMachineInstance{}
	testutil.Must(f.t, f.c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, vmi))
	return vmi
}

func (f *fixture) waitFor(ctx context.Context, name, what string, cond func(*v1.VirtualMachineInstance) bool) *v1.VirtualMachineInstance {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		vmi := f.get(ctx, name)
		if cond(vmi) {
			return vmi
		}
		if time.Now().After(deadline) {
			st, _ := json.Marshal(vmi.Status)
			f.t.Fatalf("%s: %s did not happen in 10s; status %s", name, what, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newFixture starts a kube-apiserver for one test and a client of it.
func newFixture(t *testing.T, name string) (*fixture, *testenv.Env, context.Context) {
	env, err := testenv.Start(name)
	testutil.Must(t, err)
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	scheme := runtime.NewScheme()
	testutil.Must(t, clientgoscheme.AddToScheme(scheme))
	testutil.Must(t, v1.AddToScheme(scheme))
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	testutil.Must(t, err)
	f := &fixture{t: t, c: c, kubelet: t.TempDir()}
	return f, env, ctx
}

// startReporter runs the node agent's reporter for node until the returned stop is called.
func (f *fixture) startReporter(ctx context.Context, env *testenv.Env) (stop func()) {
	return f.startReporterEvery(ctx, env, 100*time.Millisecond)
}

func (f *fixture) startReporterEvery(ctx context.Context, env *testenv.Env, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	w := launcherwatch.New(env.Clientset, node, f.kubelet)
	testutil.Must(f.t, w.Start(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&vmistatus.Reporter{Client: f.c, Launchers: w, Interval: every,
			Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}).Run(ctx)
	}()
	return func() { cancel(); <-done }
}

// TestReporter runs the reporter against a real API server: launchers on its node move their
// VMI to Running with the guest's MAC and lease and make their pod's readiness gate true,
// paused guests show the Paused condition and make it false, a guest agent's connection and
// OS show as AgentConnected and guestOSInfo, and
// VMIs on other nodes or in a final phase are left alone. Stopped and started again, it
// catches up with what changed meanwhile.
func TestReporter(t *testing.T) {
	f, env, ctx := newFixture(t, "vmistatus")

	_, pod := f.vmiWithPod(ctx, "vm1", node, v1.Scheduled)
	_, other := f.vmiWithPod(ctx, "elsewhere", "node-b", v1.Scheduled)
	_, done := f.vmiWithPod(ctx, "ended", node, v1.Failed)
	f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhaseStarting})
	f.launcherSays(other, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:02"})
	f.launcherSays(done, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:03"})
	stop := f.startReporter(ctx, env)

	time.Sleep(time.Second)
	if p := f.get(ctx, "vm1").Status.Phase; p != v1.Scheduled {
		t.Fatalf("a starting launcher moved its VMI to %s", p)
	}
	if g := f.gate(ctx, pod); g != "" {
		t.Fatalf("a starting launcher's pod has its readiness gate %q", g)
	}
	f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:01", GuestIP: "10.244.0.9"})
	vmi := f.waitFor(ctx, "vm1", "Running with the guest's address", func(v *v1.VirtualMachineInstance) bool {
		return v.Status.Phase == v1.Running && len(v.Status.Interfaces) == 1 && v.Status.Interfaces[0].MAC == "02:00:00:00:00:01"
	})
	if i := vmi.Status.Interfaces[0]; i.IP != "10.244.0.9" || i.Name != v1.DefaultInterfaceName {
		t.Errorf("first interface = %+v, want the lease 10.244.0.9 on %q", i, v1.DefaultInterfaceName)
	}
	if ts := vmi.Status.PhaseTransitionTimestamps; len(ts) == 0 || ts[len(ts)-1].Phase != v1.Running {
		t.Errorf("no Running transition timestamp: %+v", ts)
	}
	f.waitGate(ctx, pod, corev1.ConditionTrue)

	f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhasePaused, GuestMAC: "02:00:00:00:00:01", GuestIP: "10.244.0.9"})
	vmi = f.waitFor(ctx, "vm1", "Paused=True", func(v *v1.VirtualMachineInstance) bool { return v.Status.Condition(v1.VMIPaused).IsTrue() })
	if c := vmi.Status.Condition(v1.VMIPaused); c.Reason != vmistatus.ReasonPausedByUser || vmi.Status.Phase != v1.Running {
		t.Errorf("paused VMI: phase %s, condition %+v", vmi.Status.Phase, c)
	}
	f.waitGate(ctx, pod, corev1.ConditionFalse) // not Ready: Services stop sending it traffic
	f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:01", GuestIP: "10.244.0.9"})
	f.waitFor(ctx, "vm1", "no Paused condition", func(v *v1.VirtualMachineInstance) bool { return v.Status.Condition(v1.VMIPaused) == nil })
	f.waitGate(ctx, pod, corev1.ConditionTrue)

	// A guest agent connects and says what the guest runs; then it goes away.
	running := launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:01", GuestIP: "10.244.0.9"}
	withAgent := running
	withAgent.AgentConnected, withAgent.GuestOS = true, &launcherpod.GuestOSInfo{Name: "Debian GNU/Linux", KernelRelease: "6.1.0-28-amd64", Version: "12"}
	f.launcherSays(pod, withAgent)
	vmi = f.waitFor(ctx, "vm1", "AgentConnected=True", func(v *v1.VirtualMachineInstance) bool { return v.Status.Condition(v1.VMIAgentConnected).IsTrue() })
	if os := vmi.Status.GuestOSInfo; os == nil || os.Name != "Debian GNU/Linux" || os.KernelRelease != "6.1.0-28-amd64" || os.Version != "12" {
		t.Errorf("guestOSInfo = %+v, want what the agent said", os)
	}
	f.launcherSays(pod, running)
	f.waitFor(ctx, "vm1", "no AgentConnected condition", func(v *v1.VirtualMachineInstance) bool { return v.Status.Condition(v1.VMIAgentConnected) == nil })

	// The agent stops (a restart); the guest is paused meanwhile; the new agent catches up.
	stop()
	f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhasePaused, GuestMAC: "02:00:00:00:00:01", GuestIP: "10.244.0.9"})
	time.Sleep(500 * time.Millisecond)
	if f.get(ctx, "vm1").Status.Condition(v1.VMIPaused) != nil {
		t.Fatal("the status changed while no agent ran")
	}
	stop = f.startReporter(ctx, env)
	defer stop()
	f.waitFor(ctx, "vm1", "Paused=True after the restart", func(v *v1.VirtualMachineInstance) bool { return v.Status.Condition(v1.VMIPaused).IsTrue() })

	for name, want := range map[string]v1.VirtualMachineInstancePhase{"elsewhere": v1.Scheduled, "ended": v1.Failed} {
		vmi := f.get(ctx, name)
		if vmi.Status.Phase != want || len(vmi.Status.Interfaces) != 0 {
			t.Errorf("%s: phase %s interfaces %+v; the agent must leave it alone", name, vmi.Status.Phase, vmi.Status.Interfaces)
		}
	}
}

// TestReporterWakesOnStatusFile: with reads every hour, a launcher's new status file alone
// (renamed into place, no pod change) still reaches the VMI at once.
func TestReporterWakesOnStatusFile(t *testing.T) {
	f, env, ctx := newFixture(t, "vmistatus-notify")

	_, pod := f.vmiWithPod(ctx, "vm1", node, v1.Scheduled)
	f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhaseStarting})
	stop := f.startReporterEvery(ctx, env, time.Hour)
	defer stop()
	time.Sleep(time.Second) // the first pass has read Starting and watches the run directory
	if p := f.get(ctx, "vm1").Status.Phase; p != v1.Scheduled {
		t.Fatalf("a starting launcher moved its VMI to %s", p)
	}
	start := time.Now()
	f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:01"})
	f.waitFor(ctx, "vm1", "Running", func(v *v1.VirtualMachineInstance) bool { return v.Status.Phase == v1.Running })
	t.Logf("Running reported %v after the status file changed", time.Since(start).Round(time.Millisecond))
}

// barrierClient holds every VMI status patch until n of them are in flight together, or
// until its deadline, when it lets them through and remembers that they never met.
type barrierClient struct {
	client.Client
	n        int
	deadline time.Duration

	mu       sync.Mutex
	inFlight int
	met      chan struct{}
	missed   bool
}

func (b *barrierClient) Status() client.SubResourceWriter {
	return barrierWriter{b.Client.Status(), b}
}

type barrierWriter struct {
	client.SubResourceWriter
	b *barrierClient
}

func (w barrierWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	if _, ok := obj.(*v1.VirtualMachineInstance); ok {
		b := w.b
		b.mu.Lock()
		b.inFlight++
		if b.inFlight == b.n {
			close(b.met)
		}
		b.mu.Unlock()
		select {
		case <-b.met:
		case <-time.After(b.deadline):
			b.mu.Lock()
			b.missed = true
			b.mu.Unlock()
		}
	}
	return w.SubResourceWriter.Patch(ctx, obj, patch, opts...)
}

// TestReporterReportsLaunchersTogether: launchers that report Running at the same moment (a
// batch of VMIs) are reported together, not one after another, so the last VMI of a batch
// does not wait for the API calls of all the others.
func TestReporterReportsLaunchersTogether(t *testing.T) {
	f, env, ctx := newFixture(t, "vmistatus-together")
	const n = 6
	var pods []*corev1.Pod
	for i := range n {
		_, pod := f.vmiWithPod(ctx, fmt.Sprintf("vm%d", i), node, v1.Scheduled)
		f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhaseStarting})
		pods = append(pods, pod)
	}
	bc := &barrierClient{Client: f.c, n: n, deadline: 5 * time.Second, met: make(chan struct{})}
	w := launcherwatch.New(env.Clientset, node, f.kubelet)
	testutil.Must(t, w.Start(ctx))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&vmistatus.Reporter{Client: bc, Launchers: w, Interval: time.Hour,
			Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}).Run(rctx)
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(time.Second) // the first pass has read Starting everywhere
	for i, pod := range pods {
		f.launcherSays(pod, launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: fmt.Sprintf("02:00:00:00:00:%02x", i)})
	}
	for i := range n {
		f.waitFor(ctx, fmt.Sprintf("vm%d", i), "Running", func(v *v1.VirtualMachineInstance) bool { return v.Status.Phase == v1.Running })
	}
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.missed {
		t.Errorf("the %d VMIs' status patches were never in flight together: the launchers were reported one after another", n)
	}
}

// TestReporterDiskSizes: a launcher's report of a disk that grew reaches the VMI's
// status.volumeStatus with the size the guest sees, and a later growth replaces it. A name that
// is none of the VMI's volumes is left out; a status file with 10,000 disks, a negative size or
// a volume name with slashes is refused whole and the VMI keeps what it said.
func TestReporterDiskSizes(t *testing.T) {
	f, env, ctx := newFixture(t, "vmistatus-disks")
	_, pod := f.vmiWithVolumes(ctx, "vm1", node, v1.Scheduled,
		v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDisk: &v1.EmptyDiskSource{Capacity: resource.MustParse("1Gi")}}},
		v1.Volume{Name: "data", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data-pvc"}}})
	running := launcherpod.Status{Phase: launcherpod.PhaseRunning, GuestMAC: "02:00:00:00:00:01"}
	f.launcherSays(pod, running)
	logs := &lockedLog{}
	rctx, cancel := context.WithCancel(ctx)
	w := launcherwatch.New(env.Clientset, node, f.kubelet)
	testutil.Must(t, w.Start(rctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&vmistatus.Reporter{Client: f.c, Launchers: w, Interval: 100 * time.Millisecond,
			Log: slog.New(slog.NewTextHandler(logs, nil))}).Run(rctx)
	}()
	defer func() { cancel(); <-done }()
	vmi := f.waitFor(ctx, "vm1", "Running", func(v *v1.VirtualMachineInstance) bool { return v.Status.Phase == v1.Running })
	if vs := vmi.Status.VolumeStatus; vs != nil {
		t.Fatalf("volumeStatus %+v before any disk grew", vs)
	}

	grown := running
	grown.DiskSizes = map[string]int64{"data": 2 << 30, "nosuch": 1 << 30}
	f.launcherSays(pod, grown)
	want := []v1.VolumeStatus{{Name: "data", Size: 2 << 30}}
	f.waitFor(ctx, "vm1", "volumeStatus with data at 2Gi", func(v *v1.VirtualMachineInstance) bool { return reflect.DeepEqual(v.Status.VolumeStatus, want) })

	var many strings.Builder
	many.WriteString(`{"phase":"Running","guestMAC":"02:00:00:00:00:01","diskSizes":{`)
	for i := range 10000 {
		fmt.Fprintf(&many, `"d%d":%d,`, i, 5<<30)
	}
	many.WriteString(`"data":5368709120}}`)
	for name, b := range map[string]string{
		"10,000 disks":        many.String(),
		"a negative size":     `{"phase":"Running","guestMAC":"02:00:00:00:00:01","diskSizes":{"data":-1}}`,
		"a name with slashes": `{"phase":"Running","guestMAC":"02:00:00:00:00:01","diskSizes":{"data":5368709120,"../../data":5368709120}}`,
	} {
		f.launcherWrites(pod, []byte(b))
		time.Sleep(500 * time.Millisecond) // five passes
		if vs := f.get(ctx, "vm1").Status.VolumeStatus; !reflect.DeepEqual(vs, want) {
			t.Errorf("after a status file with %s: volumeStatus %+v, want %+v", name, vs, want)
		}
	}
	if n := logs.count("cannot read a launcher's status"); n < 3 {
		t.Errorf("the refused status files were logged %d times, want once each", n)
	}

	grown.DiskSizes = map[string]int64{"data": 3 << 30}
	f.launcherSays(pod, grown)
	want = []v1.VolumeStatus{{Name: "data", Size: 3 << 30}}
	f.waitFor(ctx, "vm1", "volumeStatus with data at 3Gi", func(v *v1.VirtualMachineInstance) bool { return reflect.DeepEqual(v.Status.VolumeStatus, want) })
}
