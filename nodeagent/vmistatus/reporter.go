package vmistatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
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
	"github.com/slimvirt/slimvirt/nodeagent/launchers"
)

// Interval is how often the launchers' status files are read besides when one is renamed into
// place (inotify) or a launcher pod changes.
const Interval = 500 * time.Millisecond

// Reporter reads the status file of every launcher on the node and writes what changed to the
// VMI's status.
type Reporter struct {
	Client    client.Client
	Launchers *launchers.Watcher
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
	kick     chan struct{}
	slots    chan struct{}
	workers  sync.WaitGroup
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
		}
	}
}

// maxInFlight bounds how many launchers are reported at once: each report is a few API calls,
// and launchers that start together (a batch of VMIs) must not wait for each other's.
const maxInFlight = 16

// pass reads the status of every launcher of the node and starts reporting each one that is
// not being reported already; it returns their run directories. A launcher whose status
// changes while it is being reported is read again when that report ends.
func (r *Reporter) pass(ctx context.Context) (dirs []string) {
	seen := map[types.UID]bool{}
	for _, l := range r.Launchers.List() {
		seen[l.Pod.UID] = true
		dirs = append(dirs, l.RunDir)
		st, err := launcherpod.ReadStatus(l.StatusFile())
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				r.Log.Warn("cannot read a launcher's status", "pod", l.Pod.Namespace+"/"+l.Pod.Name, "err", err)
			}
			continue
		}
		r.mu.Lock()
		if r.inFlight[l.Pod.UID] {
			r.again = true
			r.mu.Unlock()
			continue
		}
		last, ok := r.reported[l.Pod.UID]
		changed := !ok || last != st
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
	r.mu.Unlock()
	return dirs
}

// reportOne writes st to the launcher's VMI (when it changed since last reflected there) and
// to its pod's readiness gate (when it needs want).
func (r *Reporter) reportOne(ctx context.Context, l launchers.Launcher, st launcherpod.Status, changed bool, want corev1.ConditionStatus, gate bool) {
	defer r.workers.Done()
	r.slots <- struct{}{}
	pod := l.Pod.Namespace + "/" + l.Pod.Name
	reflected := false
	if changed {
		var err error
		if reflected, err = r.report(ctx, l, st); err != nil {
			r.Log.Warn("cannot report a launcher's status", "pod", pod, "err", err)
		}
	}
	if gate {
		if err := r.gate(ctx, l, st, want); err != nil {
			r.Log.Warn("cannot set a launcher pod's readiness", "pod", pod, "err", err)
		}
	}
	<-r.slots
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
func gateWant(l launchers.Launcher, st launcherpod.Status) (corev1.ConditionStatus, bool) {
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
func (r *Reporter) gate(ctx context.Context, l launchers.Launcher, st launcherpod.Status, want corev1.ConditionStatus) error {
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
// now reflects it (false while the VMI does not name the pod yet: it is tried again).
func (r *Reporter) report(ctx context.Context, l launchers.Launcher, st launcherpod.Status) (bool, error) {
	owner := metav1.GetControllerOf(l.Pod)
	if owner == nil || owner.Kind != "VirtualMachineInstance" {
		return true, nil // not a VMI's pod: nothing to report, ever
	}
	vmi := &v1.VirtualMachineInstance{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Pod.Namespace, Name: owner.Name}, vmi); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("get vmi %s/%s: %w", l.Pod.Namespace, owner.Name, err)
	}
	if vmi.UID != owner.UID || vmi.Status.Phase.IsFinal() {
		return true, nil
	}
	if vmi.Status.LauncherPod != l.Pod.Name {
		return false, nil
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
