package vmistatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/nodeagent/launcherwatch"
)

// Interval is how often the launchers' status files are read besides when one is renamed into
// place (inotify) or a launcher pod changes.
const Interval = 500 * time.Millisecond

// Reporter reads the status file of every launcher on the node and writes what changed to the
// VMI's status.
type Reporter struct {
	Client    client.Client
	Launchers *launcherwatch.Watcher
	Log       *slog.Logger
	// Interval between reads; Interval when zero.
	Interval time.Duration

	mu sync.Mutex
	// reported is the last status of each pod that the VMI's status reflects.
	reported map[types.UID]launcherpod.Status
	// inFlight are the pods being reported; again asks for a pass when one ends, as a status
	// changed meanwhile.
	inFlight map[types.UID]bool
	again    bool
	// readErr is the last error logged for each pod whose status file cannot be read.
	readErr map[types.UID]string
	kick    chan struct{}
	slots   chan struct{}
	workers sync.WaitGroup
}

// Run reports until ctx ends. A launcher's status is read again as soon as the launcher puts a
// new status file in place, on every pod change and every Interval; it is written to the VMI
// only when it changed since it was last reflected there, so after a restart the agent checks
// each VMI once and then stays quiet.
func (r *Reporter) Run(ctx context.Context) {
	every := r.Interval
	if every == 0 {
		every = Interval
	}
	r.reported = map[types.UID]launcherpod.Status{}
	r.inFlight = map[types.UID]bool{}
	r.readErr = map[types.UID]string{}
	r.kick = make(chan struct{}, 1)
	r.slots = make(chan struct{}, maxInFlight)
	defer r.workers.Wait()
	r.Launchers.OnChange(r.kickNow)
	var renamed <-chan struct{}
	notify, err := newStatusNotifier()
	if err != nil {
		r.Log.Warn("status files are read every interval only", "interval", every, "err", err)
	} else {
		defer notify.close()
		renamed = notify.changed
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		dirs := r.pass(ctx)
		if notify != nil {
			notify.follow(dirs)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-r.kick:
		case <-renamed:
			select {
			case <-ctx.Done():
				return
			case <-time.After(minPassGap):
			}
		}
	}
}

// maxInFlight bounds how many launchers are reported at once: each report is a few API calls,
// and launchers that start together (a batch of VMIs) must not wait for each other's.
const maxInFlight = 16

// ReportTimeout bounds one launcher's report, so that a report that hangs gives its slot back.
const ReportTimeout = 30 * time.Second

// minPassGap spaces passes woken by renames: a pod that renames files into its run directory
// in a loop must not keep the agent reading every launcher back to back.
const minPassGap = 20 * time.Millisecond

// pass reads the status of every launcher of the node and starts reporting each one that is
// not being reported already; it returns their run directories. A launcher whose status
// changes while it is being reported is read again when that report ends.
//
// Reading a status file cannot block the pass: launcherwatch.Launcher.ReadStatus opens only a
// regular file of the run directory itself (never a FIFO, a device or a link's target) and
// reads at most launcherpod.MaxStatusSize bytes of it; a file it refuses is that launcher's
// error only.
func (r *Reporter) pass(ctx context.Context) (dirs []string) {
	seen := map[types.UID]bool{}
	for _, l := range r.Launchers.Candidates() {
		seen[l.Pod.UID] = true
		dirs = append(dirs, l.RunDir)
		st, err := l.ReadStatus()
		r.readResult(l, err)
		if err != nil {
			continue
		}
		r.mu.Lock()
		if r.inFlight[l.Pod.UID] {
			r.again = true
			r.mu.Unlock()
			continue
		}
		last, ok := r.reported[l.Pod.UID]
		changed := !ok || !reflect.DeepEqual(last, st)
		want, gate := gateWant(l, st)
		if !changed && !gate {
			r.mu.Unlock()
			continue
		}
		r.inFlight[l.Pod.UID] = true
		r.mu.Unlock()
		r.workers.Add(1)
		go r.reportOne(ctx, l, st, changed, want, gate)
	}
	r.mu.Lock()
	for uid := range r.reported {
		if !seen[uid] && !r.inFlight[uid] {
			delete(r.reported, uid)
		}
	}
	for uid := range r.readErr {
		if !seen[uid] {
			delete(r.readErr, uid)
		}
	}
	r.mu.Unlock()
	return dirs
}

// readResult logs a launcher's status file that cannot be read, once for as long as it fails
// the same way: a pod can keep a bad file there, and the agent reads it twice a second.
func (r *Reporter) readResult(l launcherwatch.Launcher, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		delete(r.readErr, l.Pod.UID)
		return
	}
	if r.readErr[l.Pod.UID] == err.Error() {
		return
	}
	r.readErr[l.Pod.UID] = err.Error()
	r.Log.Warn("cannot read a launcher's status", "pod", l.Pod.Namespace+"/"+l.Pod.Name, "err", err)
}

// reportOne writes st to the launcher's VMI (when it changed since last reflected there) and
// to its pod's readiness gate (when it needs want, and the VMI names the pod).
func (r *Reporter) reportOne(ctx context.Context, l launcherwatch.Launcher, st launcherpod.Status, changed bool, want corev1.ConditionStatus, gate bool) {
	defer r.workers.Done()
	reflected := false
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if reflected {
			r.reported[l.Pod.UID] = st
		}
		delete(r.inFlight, l.Pod.UID)
		if r.again {
			r.again = false
			r.kickNow()
		}
	}()
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-r.slots }()
	ctx, cancel := context.WithTimeout(ctx, ReportTimeout)
	defer cancel()
	pod := l.Pod.Namespace + "/" + l.Pod.Name
	if changed {
		var err error
		if reflected, err = r.report(ctx, l, st); err != nil {
			r.Log.Warn("cannot report a launcher's status", "pod", pod, "err", err)
		}
	}
	if gate && r.Launchers.Named(l.Pod) {
		if err := r.gate(ctx, l, st, want); err != nil {
			r.Log.Warn("cannot set a launcher pod's readiness", "pod", pod, "err", err)
		}
	}
}

// kickNow asks Run for another pass.
func (r *Reporter) kickNow() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// gateWant is the readiness gate condition (launcherpod.ConditionDomainRunning) the pod needs
// for st, and whether it needs a patch: not when the pod has no such gate, nor when its gate
// already says so (in the watch's copy, a missing condition being false).
func gateWant(l launcherwatch.Launcher, st launcherpod.Status) (corev1.ConditionStatus, bool) {
	if !slices.ContainsFunc(l.Pod.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool {
		return g.ConditionType == launcherpod.ConditionDomainRunning
	}) {
		return "", false
	}
	want := corev1.ConditionFalse
	if st.Phase == launcherpod.PhaseRunning {
		want = corev1.ConditionTrue
	}
	has := false
	for _, c := range l.Pod.Status.Conditions {
		if c.Type == launcherpod.ConditionDomainRunning {
			if c.Status == want {
				return want, false
			}
			has = true
		}
	}
	// A gate without its condition is not ready already.
	return want, has || want == corev1.ConditionTrue
}

// gate sets the pod's readiness gate to want.
func (r *Reporter) gate(ctx context.Context, l launcherwatch.Launcher, st launcherpod.Status, want corev1.ConditionStatus) error {
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.PodCondition{{
		Type: launcherpod.ConditionDomainRunning, Status: want, LastTransitionTime: metav1.Now(),
		Reason: "Launcher" + st.Phase, Message: "the launcher reports the domain " + strings.ToLower(st.Phase),
	}}}})
	if err != nil {
		return err
	}
	if err := r.Client.Status().Patch(ctx, l.Pod.DeepCopy(), client.RawPatch(types.StrategicMergePatchType, patch)); err != nil {
		return fmt.Errorf("patch the %s condition: %w", launcherpod.ConditionDomainRunning, err)
	}
	return nil
}

// report writes st to the status of the VMI owning the launcher pod and says whether the status
// now reflects it (false while the VMI does not name a launcher yet: it is tried again). The
// VMI it reads decides whether the pod is its launcher at all (launcherwatch.Watcher.Confirm);
// nothing is written for a pod that it does not name.
func (r *Reporter) report(ctx context.Context, l launcherwatch.Launcher, st launcherpod.Status) (bool, error) {
	vmi := &v1.VirtualMachineInstance{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Pod.Namespace, Name: l.VMI}, vmi); err != nil {
		if apierrors.IsNotFound(err) {
			r.Launchers.Confirm(l.Pod, nil)
			return true, nil
		}
		return false, fmt.Errorf("get vmi %s/%s: %w", l.Pod.Namespace, l.VMI, err)
	}
	if vmi.Status.LauncherPod == "" && metav1.IsControlledBy(l.Pod, vmi) {
		return false, nil // the controller has not recorded its launcher yet
	}
	if !r.Launchers.Confirm(l.Pod, vmi) || vmi.Status.Phase.IsFinal() {
		return true, nil
	}
	before := vmi.DeepCopy()
	if !Apply(vmi, l.Pod, st, metav1.Now()) {
		return true, nil
	}
	err := r.Client.Status().Patch(ctx, vmi, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	if err != nil {
		return false, fmt.Errorf("patch the status of vmi %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	r.Log.Info("reported launcher status", "vmi", vmi.Namespace+"/"+vmi.Name, "launcher", st.Phase, "phase", vmi.Status.Phase)
	return true, nil
}
