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

	// reported is the last status of each pod that the VMI's status reflects.
	reported map[types.UID]launcherpod.Status
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
	kick := make(chan struct{}, 1)
	r.Launchers.OnChange(func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
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
		case <-kick:
		case <-renamed:
		}
	}
}

// pass reports every launcher of the node and returns their run directories.
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
		if err := r.gate(ctx, l, st); err != nil {
			r.Log.Warn("cannot set a launcher pod's readiness", "pod", l.Pod.Namespace+"/"+l.Pod.Name, "err", err)
		}
		if last, ok := r.reported[l.Pod.UID]; ok && last == st {
			continue
		}
		reflected, err := r.report(ctx, l, st)
		switch {
		case err != nil:
			r.Log.Warn("cannot report a launcher's status", "pod", l.Pod.Namespace+"/"+l.Pod.Name, "err", err)
		case reflected:
			r.reported[l.Pod.UID] = st
		}
	}
	for uid := range r.reported {
		if !seen[uid] {
			delete(r.reported, uid)
		}
	}
	return dirs
}

// gate sets the pod's readiness gate (launcherpod.ConditionDomainRunning) to whether the
// launcher says the domain runs; a pod without the gate, or whose gate already says so
// (in the watch's copy, a missing condition being false), is left as it is.
func (r *Reporter) gate(ctx context.Context, l launchers.Launcher, st launcherpod.Status) error {
	if !slices.ContainsFunc(l.Pod.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool {
		return g.ConditionType == launcherpod.ConditionDomainRunning
	}) {
		return nil
	}
	want := corev1.ConditionFalse
	if st.Phase == launcherpod.PhaseRunning {
		want = corev1.ConditionTrue
	}
	has := false
	for _, c := range l.Pod.Status.Conditions {
		if c.Type == launcherpod.ConditionDomainRunning {
			if c.Status == want {
				return nil
			}
			has = true
		}
	}
	if !has && want == corev1.ConditionFalse {
		return nil // a gate without its condition is not ready already
	}
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
