// Command storage-driverdef writes the External Storage suite's driver definition for a CSI
// driver from what the driver and the cluster say about it (see e2e/storagesuite/driverdef).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/slimvirt/slimvirt/e2e/storagesuite/driverdef"
)

func main() {
	endpoint := flag.String("csi-endpoint", "", "the driver's CSI socket path")
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	class := flag.String("storage-class", "slimvirt", "the StorageClass the suite copies")
	out := flag.String("o", "", "file to write")
	flag.Parse()
	if err := run(*endpoint, *kubeconfig, *class, *out); err != nil {
		fmt.Fprintln(os.Stderr, "storage-driverdef:", err)
		os.Exit(1)
	}
}

func run(endpoint, kubeconfig, class, out string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("make a client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	facts, err := driverdef.Probe(ctx, endpoint, kube, class)
	if err != nil {
		return err
	}
	data, err := yaml.Marshal(driverdef.Build(facts))
	if err != nil {
		return fmt.Errorf("encode the definition: %w", err)
	}
	head := "# Driver definition for e2e.test -storage.testdriver, written by storage-driverdef from\n" +
		"# the driver's own answers. Each capability and the fact it comes from:\n"
	return os.WriteFile(out, append([]byte(head+driverdef.Explain(facts)), data...), 0o644)
}
