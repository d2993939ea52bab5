// Command slimvirt-controller runs slimvirt's reconcilers: VM -> VMI -> launcher pod, and VMI
// replica sets.
package main

import (
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/slimvirt/slimvirt/controller/manager"
)

func main() {
	cfg, opts := parseFlags()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(opts)))
	log := ctrl.Log.WithName("setup")

	restConfig, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "load kubeconfig")
		os.Exit(1)
	}
	// A batch of VMIs costs the controller about ten requests each; controller-runtime's
	// default rate (20/s, bursts of 30) would queue them.
	restConfig.QPS, restConfig.Burst = 50, 100
	cfg.RestConfig = restConfig
	c, err := manager.New(cfg)
	if err != nil {
		log.Error(err, "configure controller")
		os.Exit(1)
	}
	if err := c.Run(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "run controller")
		os.Exit(1)
	}
}
