// Package agent is the slimvirt node agent: it installs the CNI plugin and keeps it chained,
// serves the kubelet device plugins for /dev/kvm, /dev/net/tun and the launchers' seed
// (SeedDir, mounted read-only into the launcher pods), reports each launcher's status to its
// VMI, serves per-VM metrics and the VMIs' console, VNC and power actions to the aggregated API
// server (nodeagent/vmiaccess); when slimvirt is removed from the cluster it takes itself out
// of the node as it stops.
package agent

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

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/cni/install"
	"github.com/slimvirt/slimvirt/nodeagent/deviceplugin"
	"github.com/slimvirt/slimvirt/nodeagent/removal"
)

// Config is what the node agent is told, by its flags.
type Config struct {
	// CNI says where the CNI plugin goes and where slimvirt keeps its state; the state
	// directory also holds the launchers' seed (SeedDir).
	CNI install.Config
	// DevicePlugins says where the kubelet is and how many devices to offer; its SeedDir is
	// always SeedDir(CNI.StateDir).
	DevicePlugins deviceplugin.Config
	// NodeName is this node's name: the launcher pods bound to it are reported and measured.
	NodeName string
	// KubeletDir is the kubelet's root directory: pods/<uid>/volumes hold the launchers'
	// status files and control sockets.
	KubeletDir string
	// MetricsAddr is where the per-VM Prometheus metrics are served (/metrics); empty turns
	// them off.
	MetricsAddr string
	// AccessAddr is where the VMI access endpoint (nodeagent/vmiaccess) listens for the
	// aggregated API server; empty turns it off.
	AccessAddr string
	// AccessCertDir holds its certificates (the mounted Secret
	// subresources.NodeAccessSecret); the endpoint is off, logged, while they are missing.
	AccessCertDir string
	// Namespace is the namespace of the agent's pod and DaemonSet.
	Namespace string
	// RemovalDaemonSet is the agent's own DaemonSet in Namespace: when it has been deleted
	// (helm uninstall) as the agent stops, slimvirt is taken out of the node. Empty leaves the
	// node as it is.
	RemovalDaemonSet string
	// API is the agent's access to the API server; nil takes the in-cluster one, and the
	// agent runs without any outside a pod.
	API    *rest.Config
	Logger *slog.Logger
}

// SeedDir is where the seed init container puts the launchers' seed (the containerDisk copier
// and QEMU's capabilities) below the state directory; the agent sees that directory at the
// host's path, which is what the kubelet mounts from.
func SeedDir(stateDir string) string {
	return filepath.Join(stateDir, launcherpod.NodeSeedDirName)
}

// Agent is a configured node agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	cni     *install.Installer
	plugins *deviceplugin.Plugins
}

// New validates cfg.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CNI.Logger == nil {
		cfg.CNI.Logger = cfg.Logger
	}
	if cfg.DevicePlugins.Logger == nil {
		cfg.DevicePlugins.Logger = cfg.Logger
	}
	cfg.DevicePlugins.SeedDir = SeedDir(cfg.CNI.StateDir)
	in, err := install.New(cfg.CNI)
	plugins, dpErr := deviceplugin.New(cfg.DevicePlugins)
	if err := errors.Join(err, dpErr); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, log: cfg.Logger, cni: in, plugins: plugins}, nil
}

// UninstallCNI takes the CNI plugin out of the node (`slimvirt-node uninstall-cni`).
func (a *Agent) UninstallCNI() error {
	return a.cni.Uninstall()
}

// Run keeps the CNI plugin installed, the device plugins served and the VMIs of the node
// reported until ctx ends, then takes slimvirt out of the node if its DaemonSet is gone.
func (a *Agent) Run(ctx context.Context) error {
	api, cs := a.apiAccess()
	watch := a.watchRemoval(ctx, cs)
	if err := a.serve(ctx, func(ctx context.Context) {
		if err := a.serveVMIs(ctx, api, cs); err != nil {
			a.log.Error("VMI status reporting stopped", "err", err)
		}
	}); err != nil {
		return err
	}
	return a.uninstallIfRemoved(watch, cs)
}

// serve runs the installer, the device plugins and vmis until ctx ends. The device plugins
// and the reporter retry their own failures, so only the installer's error ends the agent;
// the others then stop too.
func (a *Agent) serve(ctx context.Context, vmis func(context.Context)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { a.plugins.Run(ctx) })
	wg.Go(func() { vmis(ctx) })
	err := a.cni.Run(ctx)
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

// apiAccess is the agent's API access; nil (logged) when it runs outside a pod.
func (a *Agent) apiAccess() (*rest.Config, kubernetes.Interface) {
	var err error
	cfg := a.cfg.API
	if cfg == nil {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg = rest.CopyConfig(cfg)
	}
	if err == nil {
		if cfg.QPS == 0 {
			cfg.QPS, cfg.Burst = apiQPS, apiBurst
		}
		var cs kubernetes.Interface
		if cs, err = kubernetes.NewForConfig(cfg); err == nil {
			return cfg, cs
		}
	}
	a.log.Warn("no API access: the agent cannot tell a restart from helm uninstall nor report VMIs", "err", err)
	return nil, nil
}

// watchRemoval starts watching the agent's DaemonSet when RemovalDaemonSet is set; nil when it
// is not, or when there is no API to ask.
func (a *Agent) watchRemoval(ctx context.Context, cs kubernetes.Interface) *removal.Watcher {
	if a.cfg.RemovalDaemonSet == "" || cs == nil {
		if a.cfg.RemovalDaemonSet != "" {
			a.log.Warn("cannot watch the node agent's daemonset; the CNI plugin will stay chained when it stops")
		}
		return nil
	}
	return removal.Watch(ctx, cs, a.cfg.Namespace, a.cfg.RemovalDaemonSet, a.log)
}

// uninstallIfRemoved takes the CNI plugin out of the node when the agent's DaemonSet is gone
// (helm uninstall), and leaves it chained when the agent is only restarted or nothing can say.
func (a *Agent) uninstallIfRemoved(w *removal.Watcher, cs kubernetes.Interface) error {
	if w == nil {
		return nil
	}
	ns, ds := a.cfg.Namespace, a.cfg.RemovalDaemonSet
	gone := w.Gone()
	if !gone {
		// The watch may not have caught up yet; ask once more (this fails once the release's
		// ServiceAccount is gone, which is why the watch is there).
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var err error
		if gone, err = removal.DaemonSetGone(ctx, cs, ns, ds); err != nil {
			a.log.Warn("cannot tell whether slimvirt is being removed; leaving the node as it is", "err", err)
			return nil
		}
	}
	if !gone {
		a.log.Info("stopping for a restart; the CNI plugin stays chained")
		return nil
	}
	a.log.Info("daemonset deleted: removing slimvirt from the node", "daemonset", ns+"/"+ds)
	// The launchers' seed goes too; running launcher pods keep their mount of it.
	seed := SeedDir(a.cfg.CNI.StateDir)
	if err := os.RemoveAll(seed); err != nil {
		return errors.Join(a.cni.Uninstall(), fmt.Errorf("remove %s: %w", seed, err))
	}
	return a.cni.Uninstall()
}
