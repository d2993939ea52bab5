package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/cni/install"
	"github.com/slimvirt/slimvirt/nodeagent/deviceplugin"
	"github.com/slimvirt/slimvirt/nodeagent/removal"
)

// run keeps the CNI plugin installed, the device plugins served and the VMIs of the node
// reported until ctx ends. The device plugins and the reporter retry their own failures, so
// only the installer's error ends the agent; the others then stop too.
func run(ctx context.Context, in *install.Installer, plugins *deviceplugin.Plugins, vmis func(context.Context)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { plugins.Run(ctx) })
	wg.Go(func() { vmis(ctx) })
	err := in.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// API request rate of the agent, the kubelet's defaults: client-go's own (5/s, bursts of 10)
// made a batch of VMIs starting together wait a second and more for their status to be
// reported (three requests each).
const (
	apiQPS   = 50
	apiBurst = 100
)

// inCluster is the agent's API access; nil (logged) when it runs outside a pod.
func inCluster(log *slog.Logger) (*rest.Config, kubernetes.Interface) {
	cfg, err := rest.InClusterConfig()
	if err == nil {
		cfg.QPS, cfg.Burst = apiQPS, apiBurst
		var cs kubernetes.Interface
		if cs, err = kubernetes.NewForConfig(cfg); err == nil {
			return cfg, cs
		}
	}
	log.Warn("no API access: the agent cannot tell a restart from helm uninstall nor report VMIs", "err", err)
	return nil, nil
}

// removalWatch starts watching the agent's DaemonSet when --uninstall-when-removed is set; nil
// when it is not, or when there is no API to ask.
func removalWatch(ctx context.Context, cs kubernetes.Interface, ns, daemonSet string, log *slog.Logger) *removal.Watcher {
	if daemonSet == "" || cs == nil {
		if daemonSet != "" {
			log.Warn("cannot watch the node agent's daemonset; the CNI plugin will stay chained when it stops")
		}
		return nil
	}
	return removal.Watch(ctx, cs, ns, daemonSet, log)
}

// uninstallIfRemoved takes the CNI plugin out of the node when the agent's DaemonSet is gone
// (helm uninstall), and leaves it chained when the agent is only restarted or nothing can say.
func uninstallIfRemoved(in *install.Installer, stateDir string, w *removal.Watcher, cs kubernetes.Interface, ns, daemonSet string, log *slog.Logger) error {
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
	// The launchers' seed (the seed init container's copier and QEMU capabilities) goes too;
	// running launcher pods keep their mount of it.
	seed := filepath.Join(stateDir, "launcher")
	if err := os.RemoveAll(seed); err != nil {
		return errors.Join(in.Uninstall(), fmt.Errorf("remove %s: %w", seed, err))
	}
	return in.Uninstall()
}
