// Command slimvirt-node is the slimvirt node agent. It installs the CNI plugin and keeps it
// chained, serves the kubelet device plugins for /dev/kvm, /dev/net/tun and the launchers'
// seed (<state-dir>/launcher, mounted read-only into the launcher pods), reports each
// launcher's status to its VMI and serves per-VM metrics;
// `slimvirt-node uninstall-cni` takes the CNI plugin out again.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/slimvirt/slimvirt/cni/install"
	"github.com/slimvirt/slimvirt/nodeagent/deviceplugin"
)

func main() {
	args, uninstall := os.Args[1:], false
	if len(args) > 0 && args[0] == "uninstall-cni" {
		args, uninstall = args[1:], true
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg := install.Config{Logger: log}
	dpCfg := deviceplugin.Config{Logger: log}
	fs := flag.NewFlagSet("slimvirt-node", flag.ExitOnError)
	fs.StringVar(&cfg.CNIBinDir, "cni-bin-dir", "/opt/cni/bin", "CNI plugin directory of the node")
	fs.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "CNI configuration directory of the node")
	fs.StringVar(&cfg.SourceBinary, "cni-binary", "/opt/slimvirt/cni/slimvirt-cni", "plugin binary to install")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/slimvirt", "host directory for slimvirt's state")
	fs.StringVar(&cfg.SigningKeyFile, "signing-key-file", "", "mounted Secret with the annotation signing key")
	fs.BoolVar(&cfg.AllowCustomMACs, "allow-custom-macs", false, "let VMs on the bridge binding use MACs that are not locally administered (the controller's flag of the same name must agree)")
	fs.StringVar(&cfg.Conflist, "cni-conflist", "", "conflist to chain into (default: the one the runtime uses)")
	fs.BoolVar(&cfg.UninstallOnExit, "uninstall-on-exit", false, "remove slimvirt from the node on SIGTERM")
	daemonSet := fs.String("uninstall-when-removed", "", "DaemonSet (in $POD_NAMESPACE) of this agent: on SIGTERM, remove slimvirt from the node when it is deleted (helm uninstall)")
	fs.StringVar(&dpCfg.Dir, "device-plugin-dir", deviceplugin.DefaultDir, "kubelet's device plugin directory (kubelet.sock)")
	fs.IntVar(&dpCfg.DeviceCount, "device-count", deviceplugin.DefaultDeviceCount, "pods per node that can hold /dev/kvm and /dev/net/tun at once (and 8 times as many containers the seed)")
	vc := vmiConfig{}
	fs.StringVar(&vc.node, "node-name", os.Getenv("NODE_NAME"), "this node's name")
	fs.StringVar(&vc.kubeletDir, "kubelet-dir", "/var/lib/kubelet", "kubelet's root directory (pods/<uid>/volumes hold the launchers' status files and control sockets)")
	fs.StringVar(&vc.metricsAddr, "metrics-addr", ":9650", "address to serve per-VM Prometheus metrics on (/metrics); empty turns them off")
	_ = fs.Parse(args)
	// The seed init container puts the launchers' seed there; the agent sees the state
	// directory at the host's path, which is what the kubelet mounts from.
	dpCfg.SeedDir = filepath.Join(cfg.StateDir, "launcher")

	in, err := install.New(cfg)
	plugins, dpErr := deviceplugin.New(dpCfg)
	if err = errors.Join(err, dpErr); err != nil {
		log.Error("invalid configuration", "err", err)
		os.Exit(2)
	}
	if uninstall {
		err = in.Uninstall()
	} else {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		ns := os.Getenv("POD_NAMESPACE")
		restCfg, cs := inCluster(log)
		watch := removalWatch(ctx, cs, ns, *daemonSet, log)
		err = run(ctx, in, plugins, func(ctx context.Context) {
			if err := serveVMIs(ctx, restCfg, vc, log); err != nil {
				log.Error("VMI status reporting stopped", "err", err)
			}
		})
		if err == nil {
			err = uninstallIfRemoved(in, cfg.StateDir, watch, cs, ns, *daemonSet, log)
		}
	}
	if err != nil {
		log.Error("node agent failed", "err", err)
		os.Exit(1)
	}
}
