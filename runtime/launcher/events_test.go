package launcher

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"libvirt.org/go/libvirt"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/runtime/libvirtd"
)

// Each lifecycle event moves the status file to the right phase, and a stopped domain ends
// the launcher with the exit code that tells the controller how the guest ended.
func TestOnEvent(t *testing.T) {
	tests := []struct {
		name         string
		event        libvirt.DomainEventType
		detail       int
		shuttingDown bool
		destroyed    string
		wantPhase    string
		wantReason   string
		wantExit     *Exit
	}{
		{name: "resumed", event: libvirt.DOMAIN_EVENT_RESUMED, wantPhase: launcherpod.PhaseRunning},
		{name: "resumed while shutting down", event: libvirt.DOMAIN_EVENT_RESUMED, shuttingDown: true, wantPhase: launcherpod.PhaseShuttingDown},
		{name: "paused", event: libvirt.DOMAIN_EVENT_SUSPENDED, detail: int(libvirt.DOMAIN_EVENT_SUSPENDED_PAUSED), wantPhase: launcherpod.PhasePaused},
		{name: "paused on I/O error", event: libvirt.DOMAIN_EVENT_SUSPENDED, detail: int(libvirt.DOMAIN_EVENT_SUSPENDED_IOERROR), wantPhase: launcherpod.PhasePaused, wantReason: "paused on a disk I/O error"},
		{name: "guest powering off", event: libvirt.DOMAIN_EVENT_SHUTDOWN, wantPhase: launcherpod.PhaseShuttingDown},
		{name: "powered off", event: libvirt.DOMAIN_EVENT_STOPPED, detail: int(libvirt.DOMAIN_EVENT_STOPPED_SHUTDOWN), wantExit: &Exit{launcherpod.ExitGuestShutdown, "the guest powered off"}},
		{name: "destroyed after the grace period", event: libvirt.DOMAIN_EVENT_STOPPED, detail: int(libvirt.DOMAIN_EVENT_STOPPED_DESTROYED), destroyed: "grace over", wantExit: &Exit{launcherpod.ExitGuestShutdown, "grace over"}},
		{name: "destroyed by someone else", event: libvirt.DOMAIN_EVENT_STOPPED, detail: int(libvirt.DOMAIN_EVENT_STOPPED_DESTROYED), wantExit: &Exit{launcherpod.ExitGuestCrashed, "the domain was destroyed outside the launcher"}},
		{name: "crashed", event: libvirt.DOMAIN_EVENT_STOPPED, detail: int(libvirt.DOMAIN_EVENT_STOPPED_CRASHED), wantExit: &Exit{launcherpod.ExitGuestCrashed, "the guest crashed"}},
		{name: "QEMU failed", event: libvirt.DOMAIN_EVENT_STOPPED, detail: int(libvirt.DOMAIN_EVENT_STOPPED_FAILED), wantExit: &Exit{launcherpod.ExitGuestCrashed, "QEMU stopped unexpectedly: (no QEMU log)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status := filepath.Join(t.TempDir(), "status.json")
			l := &Launcher{
				cfg:          Config{Libvirt: libvirtd.Config{RunDir: t.TempDir() + "/libvirt"}},
				vmi:          &v1.VirtualMachineInstance{},
				log:          discardLogger(),
				status:       &statusWriter{path: status},
				shuttingDown: tc.shuttingDown,
				destroyed:    tc.destroyed,
				session:      true,
			}
			_ = l.status.phase(launcherpod.PhaseStarting, "")
			exit := l.onEvent(libvirt.DomainEventLifecycle{Event: tc.event, Detail: tc.detail})
			if tc.wantExit != nil {
				if exit == nil || *exit != *tc.wantExit {
					t.Fatalf("exit %+v, want %+v", exit, tc.wantExit)
				}
				return
			}
			if exit != nil {
				t.Fatalf("unexpected exit %+v", exit)
			}
			st, err := launcherpod.ReadStatus(status)
			if err != nil {
				t.Fatal(err)
			}
			if st.Phase != tc.wantPhase || (tc.wantReason != "" && st.Reason != tc.wantReason) {
				t.Errorf("status %+v, want phase %s reason %q", st, tc.wantPhase, tc.wantReason)
			}
		})
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
