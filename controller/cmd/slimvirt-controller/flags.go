package main

import (
	"flag"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/slimvirt/slimvirt/api/subresources"
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
	// The node agent's seed device plugin mounts the seed now; the flag stays so that
	// charts passing it keep working.
	flag.StringVar(&cfg.SigningKeyFile, "signing-key-file", "", "file holding the key that signs launcher pods' interfaces annotation (a mounted Secret)")
	flag.BoolVar(&cfg.AllowEmulation, "allow-emulation", false, "let launchers run guests under TCG where KVM is missing")
	flag.BoolVar(&cfg.AllowCustomMACs, "allow-custom-macs", false, "let bridge interfaces use MACs that are not locally administered (vendor MACs); the node agent's flag of the same name must agree")
	flag.BoolVar(&cfg.AllowHostDisk, "allow-host-disk", false, "let VMIs use hostDisk volumes (they mount a node file into the launcher pod, owned by the launcher's account)")
	flag.Func("host-disk-dirs", "comma-separated node directories hostDisk images may lie under (default "+vmi.DefaultHostDiskDir+"); a VMI creator may read, write and create any image below them", func(s string) error {
		cfg.HostDiskDirs = strings.Split(s, ",")
		return vmi.CheckHostDiskDirs(cfg.HostDiskDirs)
	})
	flag.Func("launcher-memory-overhead", "memory added to each launcher pod's request for libvirtd, virtlogd, QEMU and the launcher (default "+defaultOverhead+")", func(s string) error {
		q, err := resource.ParseQuantity(s)
		cfg.LauncherMemoryOverhead = q
		return err
	})
	flag.IntVar(&cfg.CPUAllocationRatio, "cpu-allocation-ratio", vmi.DefaultCPUAllocationRatio, "vCPUs per physical CPU a launcher pod asks for when its VMI requests no CPU: it requests 1/ratio of a CPU per vCPU (KubeVirt's cpuAllocationRatio)")
	flag.StringVar(&cfg.MetricsBindAddress, "metrics-bind-address", ":8080", "address of the metrics endpoint (0 turns it off)")
	flag.StringVar(&cfg.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "address of the health probes (0 turns them off)")
	flag.BoolVar(&cfg.LeaderElect, "leader-elect", false, "elect a leader so only one replica reconciles")
	flag.StringVar(&cfg.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election lease (the pod's own when empty)")
	flag.IntVar(&cfg.SubresourcesPort, "subresources-port", 0, "port of the aggregated API subresources.slimvirt.io (0 turns it off)")
	flag.IntVar(&cfg.NodeAccessPort, "node-access-port", subresources.DefaultNodePort, "port of the node agents' access endpoint")
	flag.StringVar(&cfg.WebConsoleAddr, "web-console-addr", "", "address of the in-cluster web console, e.g. :8090 (empty turns it off)")
	flag.StringVar(&cfg.Deployment, "owner-deployment", "", "the controller's Deployment, owner of the certificates and keys it makes (removed with it)")
	cfg.Namespace = os.Getenv("POD_NAMESPACE")
	opts := &zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	return cfg, opts
}
