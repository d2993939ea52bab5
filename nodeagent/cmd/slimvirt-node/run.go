package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/cni/install"
	"github.com/slimvirt/slimvirt/nodeagent/deviceplugin"
	"github.com/slimvirt/slimvirt/nodeagent/removal"
)

// run keeps the CNI plugin installed and the device plugins served until ctx ends. The device
// plugins retry their own failures, so only the installer's error ends the agent; the device
// plugins then stop too, removing their sockets.
func run(ctx context.Context, in *install.Installer, plugins *deviceplugin.Plugins) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { plugins.Run(ctx) })
	err := in.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// removalWatch starts watching the agent's DaemonSet when --uninstall-when-removed is set; nil
// when it is not, or when there is no in-cluster API to ask (logged).
func removalWatch(ctx context.Context, ns, daemonSet string, log *slog.Logger) (*removal.Watcher, kubernetes.Interface) {
	if daemonSet == "" {
		return nil, nil
	}
	cfg, err := rest.InClusterConfig()
	if err == nil {
		var cs kubernetes.Interface
		if cs, err = kubernetes.NewForConfig(cfg); err == nil {
			return removal.Watch(ctx, cs, ns, daemonSet, log), cs
		}
	}
	log.Warn("cannot watch the node agent's daemonset; the CNI plugin will stay chained when it stops", "err", err)
	return nil, nil
}

// uninstallIfRemoved takes the CNI plugin out of the node when the agent's DaemonSet is gone
// (helm uninstall), and leaves it chained when the agent is only restarted or nothing can say.
func uninstallIfRemoved(in *install.Installer, w *removal.Watcher, cs kubernetes.Interface, ns, daemonSet string, log *slog.Logger) error {
	if w == nil {
		return nil
	}
	gone := w.Gone()
	if !gone {
		// The watch may not have caught up yet; ask once more (this fails once the release's
		// ServiceAccount is gone, which is why the watch is there).
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var err error
		if gone, err = removal.DaemonSetGone(ctx, cs, ns, daemonSet); err != nil {
			log.Warn("cannot tell whether slimvirt is being removed; leaving the node as it is", "err", err)
			return nil
		}
	}
	if !gone {
		log.Info("stopping for a restart; the CNI plugin stays chained")
		return nil
	}
	log.Info("daemonset deleted: removing slimvirt from the node", "daemonset", ns+"/"+daemonSet)
	return in.Uninstall()
}
