package launcher

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/runtime/control"
	"github.com/slimvirt/slimvirt/runtime/diskresize"
	"github.com/slimvirt/slimvirt/runtime/libvirtd"
)

// lifecycle is one launcher following a fake domain: the lifecycle's logic without libvirtd.
type lifecycle struct {
	t    *testing.T
	l    *Launcher
	hv   *fakeHypervisor
	sigs chan os.Signal
	died chan string
	// grace is the clock's grace period: what the launcher asked for and when it is over.
	asked chan time.Duration
	over  chan time.Time
	exit  chan error
}

func newLifecycle(t *testing.T, graceSeconds int64) *lifecycle {
	t.Helper()
	dir := t.TempDir()
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "ns"}}
	vmi.Spec.TerminationGracePeriodSeconds = &graceSeconds
	// No serial console: the lifecycle, not QEMU's socket, is under test.
	vmi.Spec.Domain.Devices.AutoattachSerialConsole = ptr.To(false)
	cfg := Config{
		StatusFile:    filepath.Join(dir, "status.json"),
		ControlSocket: filepath.Join(dir, "control.sock"),
		Libvirt:       libvirtd.Config{RunDir: filepath.Join(dir, "libvirt")},
		Log:           discardLogger(),
	}
	l, err := New(cfg, vmi)
	testutil.Must(t, err)
	lc := &lifecycle{
		t: t, l: l, hv: newFakeHypervisor(),
		sigs: make(chan os.Signal, 4), died: make(chan string, 1),
		asked: make(chan time.Duration, 4), over: make(chan time.Time, 1),
		exit: make(chan error, 1),
	}
	l.after = func(d time.Duration) <-chan time.Time {
		lc.asked <- d
		if d == 0 {
			c := make(chan time.Time, 1)
			c <- time.Time{}
			return c
		}
		return lc.over
	}
	return lc
}

// start runs the domain and waits until the launcher reports it running.
func (lc *lifecycle) start() {
	lc.t.Helper()
	lc.run()
	lc.waitPhase(launcherpod.PhaseRunning)
}

func (lc *lifecycle) run() { lc.runPlan(plan{xml: "<domain/>"}) }

func (lc *lifecycle) runPlan(p plan) {
	ctx, cancel := context.WithCancel(context.Background())
	lc.t.Cleanup(cancel)
	go func() { lc.exit <- lc.l.runDomain(ctx, lc.hv, lc.died, p, lc.sigs) }()
}

func (lc *lifecycle) waitPhase(phase string) {
	lc.t.Helper()
	testutil.WaitFor(lc.t, 5*time.Second, "phase "+phase, func() bool { return lc.l.status.get().Phase == phase })
}

// wantExit waits for the launcher to end with code and reason.
func (lc *lifecycle) wantExit(code int, reason string) {
	lc.t.Helper()
	select {
	case err := <-lc.exit:
		var ex *Exit
		if !errors.As(err, &ex) || ex.Code != code || ex.Reason != reason {
			lc.t.Fatalf("exit %v, want code %d %q", err, code, reason)
		}
	case <-time.After(5 * time.Second):
		lc.t.Fatalf("the launcher did not end; the domain saw %v", lc.hv.dom.called())
	}
}

func (lc *lifecycle) wantCalls(want ...string) {
	lc.t.Helper()
	if got := lc.hv.dom.called(); !slices.Equal(got, want) {
		lc.t.Errorf("domain calls %v, want %v", got, want)
	}
}

// The domain starts paused and runs once resumed; the guest powering off ends the launcher
// with the guest's success.
func TestLifecycleStartPowerOff(t *testing.T) {
	lc := newLifecycle(t, 30)
	lc.start()
	lc.hv.dom.stop(libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN)
	lc.wantExit(launcherpod.ExitGuestShutdown, "the guest powered off")
	lc.wantCalls("resume")
}

// A PVC's disk that grows while the guest runs is given to the guest, and the size the guest
// now sees is in the status file, where the node agent reads it; a disk that does not grow is
// not listed.
func TestLifecycleDiskGrowthInStatus(t *testing.T) {
	lc := newLifecycle(t, 30)
	dir := t.TempDir()
	grows, stays := filepath.Join(dir, "grows.img"), filepath.Join(dir, "stays.img")
	for _, p := range []string{grows, stays} {
		testutil.Must(t, os.WriteFile(p, nil, 0o644))
		testutil.Must(t, os.Truncate(p, 1<<20))
	}
	lc.runPlan(plan{xml: "<domain/>", disks: []diskresize.Disk{{Volume: "data", Path: grows}, {Volume: "logs", Path: stays}}})
	lc.waitPhase(launcherpod.PhaseRunning)
	if st, err := launcherpod.ReadStatus(lc.l.status.path); err != nil || st.DiskSizes != nil {
		t.Fatalf("before any growth the status file says %+v, %v", st, err)
	}
	testutil.Must(t, os.Truncate(grows, 3<<20))
	want := map[string]int64{"data": 3 << 20}
	var st launcherpod.Status
	testutil.WaitFor(t, 3*diskresize.DefaultInterval+5*time.Second, "the grown disk in the status file", func() bool {
		var err error
		st, err = launcherpod.ReadStatus(lc.l.status.path)
		return err == nil && maps.Equal(st.DiskSizes, want)
	})
	if st.Phase != launcherpod.PhaseRunning {
		t.Errorf("phase %s after the disk grew, want Running", st.Phase)
	}
	lc.hv.dom.stop(libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN)
	lc.wantExit(launcherpod.ExitGuestShutdown, "the guest powered off")
	lc.wantCalls("resume", "resize")
}

// A SIGTERM or a control-socket shutdown presses the power button; a guest that does not
// power off within the grace period is destroyed, and the launcher says so as a clean end.
func TestLifecycleShutdown(t *testing.T) {
	tests := []struct {
		name       string
		grace      int64
		setup      func(d *fakeDomain)
		request    func(lc *lifecycle)
		graceOver  bool
		wantReason string
		wantCalls  []string
	}{
		{
			name:       "guest powers off on the power button",
			grace:      30,
			request:    func(lc *lifecycle) { lc.sigs <- syscall.SIGTERM },
			wantReason: "the guest powered off",
			wantCalls:  []string{"resume", "power button"},
		},
		{
			name:  "shutdown on the control socket",
			grace: 30,
			request: func(lc *lifecycle) {
				_, err := lc.l.handle(context.Background(), control.Shutdown)
				testutil.Must(lc.t, err)
			},
			wantReason: "the guest powered off",
			wantCalls:  []string{"resume", "power button"},
		},
		{
			name:       "guest ignores the power button: destroyed after the grace period",
			grace:      30,
			setup:      func(d *fakeDomain) { d.ignoresPowerButton = true },
			request:    func(lc *lifecycle) { lc.sigs <- syscall.SIGTERM },
			graceOver:  true,
			wantReason: "the guest did not power off within the grace period of 30s and was destroyed",
			wantCalls:  []string{"resume", "power button", "destroy"},
		},
		{
			name:       "no grace period: destroyed at once",
			grace:      0,
			request:    func(lc *lifecycle) { lc.sigs <- syscall.SIGINT },
			wantReason: "the guest did not power off within the grace period of 0s and was destroyed",
			wantCalls:  []string{"resume", "destroy"},
		},
		{
			name:       "the power button fails: destroyed at once",
			grace:      30,
			setup:      func(d *fakeDomain) { d.powerButtonErr = errors.New("no ACPI") },
			request:    func(lc *lifecycle) { lc.sigs <- syscall.SIGTERM },
			wantReason: "the guest did not power off within the grace period of 30s and was destroyed",
			wantCalls:  []string{"resume", "power button", "destroy"},
		},
		{
			name:  "a paused guest is resumed to see the power button",
			grace: 30,
			request: func(lc *lifecycle) {
				_, err := lc.l.handle(context.Background(), control.Pause)
				testutil.Must(lc.t, err)
				lc.waitPhase(launcherpod.PhasePaused)
				lc.sigs <- syscall.SIGTERM
			},
			wantReason: "the guest powered off",
			wantCalls:  []string{"resume", "suspend", "resume", "power button"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lc := newLifecycle(t, tc.grace)
			if tc.setup != nil {
				tc.setup(lc.hv.dom)
			}
			lc.start()
			tc.request(lc)
			if got := <-lc.asked; got != time.Duration(tc.grace)*time.Second {
				t.Errorf("grace period %s, want %ds", got, tc.grace)
			}
			if tc.graceOver {
				lc.waitPhase(launcherpod.PhaseShuttingDown)
				lc.over <- time.Now()
			}
			lc.wantExit(launcherpod.ExitGuestShutdown, tc.wantReason)
			lc.wantCalls(tc.wantCalls...)
		})
	}
}

// A guest that crashes, a domain destroyed by someone else, a lost libvirtd and a dead daemon
// end the launcher with the guest's failure.
func TestLifecycleCrash(t *testing.T) {
	tests := []struct {
		name       string
		end        func(lc *lifecycle)
		wantReason string
	}{
		{"guest crashed", func(lc *lifecycle) { lc.hv.dom.stop(libvirt.DOMAIN_EVENT_STOPPED_CRASHED) }, "the guest crashed"},
		{"destroyed outside the launcher", func(lc *lifecycle) { lc.hv.dom.stop(libvirt.DOMAIN_EVENT_STOPPED_DESTROYED) }, "the domain was destroyed outside the launcher"},
		{"libvirtd lost", func(lc *lifecycle) { lc.hv.lost <- "lost the connection to libvirtd (reason 0)" }, "lost the connection to libvirtd (reason 0)"},
		{"libvirtd died", func(lc *lifecycle) { lc.died <- "libvirtd exited: signal: killed" }, "libvirtd exited: signal: killed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lc := newLifecycle(t, 30)
			lc.start()
			tc.end(lc)
			lc.wantExit(launcherpod.ExitGuestCrashed, tc.wantReason)
		})
	}
}

// Pause and unpause on the control socket move the status between Paused and Running.
func TestLifecyclePause(t *testing.T) {
	lc := newLifecycle(t, 30)
	lc.start()
	for _, step := range []struct{ cmd, phase string }{
		{control.Pause, launcherpod.PhasePaused},
		{control.Unpause, launcherpod.PhaseRunning},
		{control.Pause, launcherpod.PhasePaused},
	} {
		_, err := lc.l.handle(context.Background(), step.cmd)
		testutil.Must(t, err)
		lc.waitPhase(step.phase)
	}
	if _, err := lc.l.handle(context.Background(), control.Pause); err == nil {
		t.Error("pausing a paused domain succeeded")
	}
	lc.hv.dom.stop(libvirt.DOMAIN_EVENT_STOPPED_CRASHED)
	lc.wantExit(launcherpod.ExitGuestCrashed, "the guest crashed")
}

// A pod deleted before its guest started ends cleanly without starting it; a domain that
// cannot start or resume is a setup failure.
func TestLifecycleStartFailures(t *testing.T) {
	t.Run("signal before the start", func(t *testing.T) {
		lc := newLifecycle(t, 30)
		lc.sigs <- syscall.SIGTERM
		lc.run()
		lc.wantExit(launcherpod.ExitGuestShutdown, "received terminated before the guest started")
		if lc.hv.started {
			t.Error("the domain was started")
		}
	})
	t.Run("start fails", func(t *testing.T) {
		lc := newLifecycle(t, 30)
		lc.hv.startErr = errors.New("no QEMU")
		lc.run()
		lc.wantExit(launcherpod.ExitSetupFailed, "start the domain: no QEMU")
	})
	t.Run("resume fails", func(t *testing.T) {
		lc := newLifecycle(t, 30)
		lc.hv.dom.resumeErr = errors.New("QEMU gone")
		lc.run()
		lc.wantExit(launcherpod.ExitSetupFailed, "resume the domain: QEMU gone")
		lc.wantCalls("resume", "destroy")
	})
}

// TestStatusDiskSize: the status file lists a disk once it grew, with the size the guest sees
// now; a report of a disk that did not grow, or of a size beyond what the node agent accepts,
// changes nothing, so the file stays one the node agent reads.
func TestStatusDiskSize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		resizes []diskresize.Resized
		want    map[string]int64
	}{
		{"grew", []diskresize.Resized{{Volume: "data", From: 1 << 30, To: 2 << 30}}, map[string]int64{"data": 2 << 30}},
		{"grew twice", []diskresize.Resized{{Volume: "data", From: 1 << 30, To: 2 << 30}, {Volume: "data", From: 2 << 30, To: 5 << 30}},
			map[string]int64{"data": 5 << 30}},
		{"two disks", []diskresize.Resized{{Volume: "data", From: 1 << 30, To: 2 << 30}, {Volume: "root", From: 1 << 20, To: 1 << 21}},
			map[string]int64{"data": 2 << 30, "root": 1 << 21}},
		{"same size", []diskresize.Resized{{Volume: "data", From: 1 << 30, To: 1 << 30}}, nil},
		{"smaller", []diskresize.Resized{{Volume: "data", From: 2 << 30, To: 1 << 30}}, nil},
		{"beyond the bound", []diskresize.Resized{{Volume: "data", From: 1 << 30, To: launcherpod.MaxDiskSize + 512}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &statusWriter{path: filepath.Join(t.TempDir(), "status.json")}
			testutil.Must(t, s.phase(launcherpod.PhaseRunning, ""))
			for _, r := range tc.resizes {
				testutil.Must(t, s.diskSize(r))
			}
			st, err := launcherpod.ReadStatus(s.path)
			testutil.Must(t, err)
			if !maps.Equal(st.DiskSizes, tc.want) || st.Phase != launcherpod.PhaseRunning {
				t.Errorf("status file says %s %v, want Running %v", st.Phase, st.DiskSizes, tc.want)
			}
		})
	}
}

// TestStatusUpdateKeepsCurrent: an update that changes the disk sizes in place is still seen as
// a change and written, and what was written before is not changed behind the writer's back.
func TestStatusUpdateKeepsCurrent(t *testing.T) {
	s := &statusWriter{path: filepath.Join(t.TempDir(), "status.json")}
	testutil.Must(t, s.phase(launcherpod.PhaseRunning, ""))
	testutil.Must(t, s.diskSize(diskresize.Resized{Volume: "data", From: 1, To: 1 << 20}))
	held := s.get()
	testutil.Must(t, s.diskSize(diskresize.Resized{Volume: "data", From: 1 << 20, To: 2 << 20}))
	if held.DiskSizes["data"] != 1<<20 {
		t.Errorf("a status read earlier changed: %v", held.DiskSizes)
	}
	st, err := launcherpod.ReadStatus(s.path)
	testutil.Must(t, err)
	if st.DiskSizes["data"] != 2<<20 {
		t.Errorf("status file says %v, want data at %d", st.DiskSizes, 2<<20)
	}
}

// TestStatusRunningDiskTargets: once the domain runs, the status file names each disk's guest
// device by its volume, read from the aliases of the domain XML the launcher defined; a disk
// without the launcher's alias is not named.
func TestStatusRunningDiskTargets(t *testing.T) {
	const xml = `<domain type="qemu"><name>d</name><devices>
<disk type="file" device="disk"><target dev="vda" bus="virtio"/><alias name="ua-rootdisk"/></disk>
<disk type="file" device="cdrom"><target dev="sda" bus="sata"/><alias name="ua-cdrom-1"/></disk>
<disk type="file" device="disk"><target dev="vdb" bus="virtio"/><alias name="virtio-disk1"/></disk>
</devices></domain>`
	s := &statusWriter{path: filepath.Join(t.TempDir(), "status.json")}
	testutil.Must(t, s.running(xml))
	st, err := launcherpod.ReadStatus(s.path)
	testutil.Must(t, err)
	if want := map[string]string{"rootdisk": "vda", "cdrom-1": "sda"}; st.Phase != launcherpod.PhaseRunning || !maps.Equal(st.DiskTargets, want) {
		t.Errorf("status file says %s %v, want Running %v", st.Phase, st.DiskTargets, want)
	}
	if err := s.running("<domain"); err == nil {
		t.Error("a domain XML that does not parse gave no error")
	}
	if st, _ := launcherpod.ReadStatus(s.path); st.Phase != launcherpod.PhaseRunning || len(st.DiskTargets) != 2 {
		t.Errorf("after an unreadable XML the status says %s %v, want Running with the targets kept", st.Phase, st.DiskTargets)
	}
}
