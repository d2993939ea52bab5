package main

import (
	"flag"

	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/slimvirt/slimvirt/controller/manager"
	"github.com/slimvirt/slimvirt/controller/vmi"
)

// defaultOverhead is the launcher pod's memory beyond the guest's RAM, as measured by
// make bench-runtime (256 MiB guest, TCG): the launcher and libvirtd 39.7 MiB RSS, QEMU 107 MiB
// over guest RAM (about 40 MiB of which is TCG's translation cache, absent under KVM); rounded up.
const defaultOverhead = "160Mi"

// parseFlags reads the command line into a Config (all but RestConfig, which comes from the
// usual kubeconfig flag and in-cluster settings) and the logging options.
func parseFlags() (manager.Config, *zap.Options) {
	var cfg manager.Config
	cfg.LauncherMemoryOverhead = resource.MustParse(defaultOverhead)
	flag.StringVar(&cfg.LauncherImage, "launcher-image", "slimvirt.io/launcher:dev", "image of the launcher pods")
	flag.StringVar(&cfg.LauncherNodeDir, "launcher-node-dir", vmi.DefaultNodeDir, "node directory the node agent seeds for the launcher pods (the copier, QEMU's capabilities); they mount it read-only")
	flag.StringVar(&cfg.SigningKeyFile, "signing-key-file", "", "file holding the key that signs launcher pods' interfaces annotation (a mounted Secret)")
	flag.BoolVar(&cfg.AllowEmulation, "allow-emulation", false, "let launchers run guests under TCG where KVM is missing")
	flag.BoolVar(&cfg.AllowHostDisk, "allow-host-disk", false, "let VMIs use hostDisk volumes (they mount a node directory into the launcher pod)")
	flag.Func("launcher-memory-overhead", "memory added to each launcher pod's request for libvirtd, virtlogd, QEMU and the launcher (default "+defaultOverhead+")", func(s string) error {
		q, err := resource.ParseQuantity(s)
		cfg.LauncherMemoryOverhead = q
		return err
	})
	flag.StringVar(&cfg.MetricsBindAddress, "metrics-bind-address", ":8080", "address of the metrics endpoint (0 turns it off)")
	flag.StringVar(&cfg.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "address of the health probes (0 turns them off)")
	flag.BoolVar(&cfg.LeaderElect, "leader-elect", false, "elect a leader so only one replica reconciles")
	flag.StringVar(&cfg.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election lease (the pod's own when empty)")
	opts := &zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	return cfg, opts
}
