// Command slimvirt-testcni is the local cluster's test CNI plugin (CLUSTER_NET=calico|vpc):
// point-to-point veths with a link-local gateway, see package testcni.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/slimvirt/slimvirt/cluster/testcni"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: testcni.Add, Del: testcni.Del, Check: testcni.Check},
		version.All, "slimvirt-testcni: calico- and vpc-style point-to-point pod networks")
}
