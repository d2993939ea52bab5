// Command slimvirt-cni is the slimvirt chained CNI plugin (conflist type "slimvirt").
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/slimvirt/slimvirt/cni/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.Funcs(), plugin.Versions(), plugin.About)
}
