//go:build pins

// Package pins keeps the modules slimvirt builds on in go.mod at their pinned versions while
// no other package imports them yet. It is never built.
package pins

import (
	_ "github.com/container-storage-interface/spec/lib/go/csi"
	_ "github.com/containernetworking/cni/pkg/skel"
	_ "github.com/containernetworking/plugins/pkg/ns"
	_ "github.com/containernetworking/plugins/pkg/testutils"
	_ "github.com/google/nftables"
	_ "github.com/insomniacslk/dhcp/dhcpv4/server4"
	_ "github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	_ "github.com/mdlayher/arp"
	_ "github.com/mdlayher/packet"
	_ "github.com/onsi/ginkgo/v2"
	_ "github.com/onsi/gomega"
	_ "github.com/ulikunitz/xz"
	_ "github.com/vishvananda/netlink"
	_ "google.golang.org/grpc"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	_ "k8s.io/mount-utils"
	_ "libvirt.org/go/libvirt"
	_ "libvirt.org/go/libvirtxml"
	_ "sigs.k8s.io/controller-runtime"
)
