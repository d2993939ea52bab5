// Package removal tells a node agent that is being stopped whether slimvirt is being removed
// from the cluster (its DaemonSet deleted, as `helm uninstall` does) or the agent is only
// restarted (an upgrade, an eviction, a node drain): only the first should take the CNI plugin
// out of the node's configuration, since VMs may still start on the node otherwise.
package removal

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// DaemonSetGone says whether the DaemonSet ns/name no longer exists or is being deleted. An
// error (the API server unreachable) is returned as such: the caller keeps the node as it is.
func DaemonSetGone(ctx context.Context, cs kubernetes.Interface, ns, name string) (bool, error) {
	ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get daemonset %s/%s: %w", ns, name, err)
	}
	return ds.DeletionTimestamp != nil, nil
}

// Watcher notices the DaemonSet's deletion while the agent runs. It matters at `helm uninstall`:
// the release's ServiceAccount is deleted right after the DaemonSet, so by the time the agent
// gets SIGTERM its token no longer works, but a watch opened earlier has already seen the
// deletion.
type Watcher struct {
	gone atomic.Bool
}

// Watch follows ns/name until ctx ends, reconnecting after errors.
func Watch(ctx context.Context, cs kubernetes.Interface, ns, name string, log *slog.Logger) *Watcher {
	w := &Watcher{}
	go func() {
		for ctx.Err() == nil {
			if err := w.follow(ctx, cs, ns, name); err != nil && ctx.Err() == nil {
				log.Warn("watching the node agent's daemonset", "err", err)
			}
			if w.gone.Load() {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}()
	return w
}

// Gone says whether the watch has seen the DaemonSet deleted or being deleted.
func (w *Watcher) Gone() bool { return w.gone.Load() }

func (w *Watcher) follow(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		w.gone.Store(true)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get daemonset %s/%s: %w", ns, name, err)
	}
	if ds.DeletionTimestamp != nil {
		w.gone.Store(true)
		return nil
	}
	wi, err := cs.AppsV1().DaemonSets(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
		ResourceVersion: ds.ResourceVersion,
	})
	if err != nil {
		return fmt.Errorf("watch daemonset %s/%s: %w", ns, name, err)
	}
	defer wi.Stop()
	for ev := range wi.ResultChan() {
		switch ev.Type {
		case watch.Deleted:
			w.gone.Store(true)
			return nil
		case watch.Modified:
			if d, ok := ev.Object.(*appsv1.DaemonSet); ok && d.DeletionTimestamp != nil {
				w.gone.Store(true)
				return nil
			}
		case watch.Error:
			return fmt.Errorf("watch daemonset %s/%s: %w", ns, name, apierrors.FromObject(ev.Object))
		}
	}
	return nil
}
