// Package driverdef writes the driver definition that Kubernetes' External Storage e2e suite
// (e2e.test -storage.testdriver=FILE) reads, from what a CSI driver says about itself: its
// plugin, controller and node capabilities, its NodeGetInfo, a block-volume probe, and the
// CSIDriver and StorageClass objects the cluster holds. Each capability is given with the fact
// it was taken from, so the suite runs exactly the specs the driver claims to pass.
package driverdef

import (
	"fmt"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// Facts is what the driver and the cluster say about the driver.
type Facts struct {
	Name              string
	Plugin            []*csi.PluginCapability
	Controller        []csi.ControllerServiceCapability_RPC_Type
	Node              []csi.NodeServiceCapability_RPC_Type
	NodeID            string
	MaxVolumesPerNode int64
	Topology          map[string]string // NodeGetInfo's accessible topology segments
	// Block says whether CreateVolume accepted a volume with block access (the probe).
	Block bool
	// FSGroupPolicy is the CSIDriver object's spec.fsGroupPolicy.
	FSGroupPolicy string
	// StorageCapacity is the CSIDriver object's spec.storageCapacity.
	StorageCapacity bool
	// StorageClass is the class the suite copies (a WaitForFirstConsumer class for node-local
	// volumes); AllowExpansion is its allowVolumeExpansion.
	StorageClass   string
	AllowExpansion bool
	// MinSize is the smallest volume the suite asks for.
	MinSize string
}

// Capability is one entry of DriverInfo.Capabilities and the fact behind its value.
type Capability struct {
	Name   string
	Value  bool
	Reason string
}

// Definition is the file e2e.test reads. Field names are the suite's (its decoder matches
// them case-insensitively, without JSON tags).
type Definition struct {
	StorageClass struct {
		FromExistingClassName string `json:"FromExistingClassName"`
	} `json:"StorageClass"`
	DriverInfo DriverInfo `json:"DriverInfo"`
}

// DriverInfo is the part of the suite's DriverInfo the definition sets.
type DriverInfo struct {
	Name               string              `json:"Name"`
	SupportedSizeRange SizeRange           `json:"SupportedSizeRange"`
	SupportedFsType    map[string]struct{} `json:"SupportedFsType"`
	Capabilities       map[string]bool     `json:"Capabilities"`
	TopologyKeys       []string            `json:"TopologyKeys,omitempty"`
	StressTestOptions  *StressTestOptions  `json:"StressTestOptions,omitempty"`
}

// SizeRange bounds the volumes the suite creates.
type SizeRange struct {
	Min string `json:"Min"`
}

// StressTestOptions sizes the suite's stress specs for a small node.
type StressTestOptions struct {
	NumPods     int `json:"NumPods"`
	NumRestarts int `json:"NumRestarts"`
}

// Capabilities derives each capability the suite knows from the facts, with its reason.
func Capabilities(f Facts) []Capability {
	has := func(t csi.ControllerServiceCapability_RPC_Type) bool { return contains(f.Controller, t) }
	nodeHas := func(t csi.NodeServiceCapability_RPC_Type) bool { return contains(f.Node, t) }
	online, offline := expansion(f.Plugin)
	singleNode := len(f.Topology) == 1 && f.NodeID != "" && firstValue(f.Topology) == f.NodeID
	c := []Capability{
		{"persistence", has(csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME), "CREATE_DELETE_VOLUME: volumes outlive their pods"},
		{"block", f.Block, "CreateVolume with block access was accepted by the probe"},
		{"exec", true, "volumes are bind mounts without noexec"},
		{"multipods", true, "each NodePublishVolume is its own bind mount; pods on one node share the volume"},
		{"fsGroup", f.FSGroupPolicy == "File", "CSIDriver fsGroupPolicy is " + f.FSGroupPolicy},
		{"volumeMountGroup", nodeHas(csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP), "node capability VOLUME_MOUNT_GROUP"},
		{"pvcDataSource", has(csi.ControllerServiceCapability_RPC_CLONE_VOLUME), "controller capability CLONE_VOLUME"},
		{"snapshotDataSource", has(csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT), "controller capability CREATE_DELETE_SNAPSHOT"},
		{"controllerExpansion", has(csi.ControllerServiceCapability_RPC_EXPAND_VOLUME) && f.AllowExpansion, "controller capability EXPAND_VOLUME and allowVolumeExpansion"},
		{"nodeExpansion", nodeHas(csi.NodeServiceCapability_RPC_EXPAND_VOLUME) && f.AllowExpansion, "node capability EXPAND_VOLUME and allowVolumeExpansion"},
		{"onlineExpansion", online, "plugin capability VolumeExpansion ONLINE"},
		{"offlineExpansion", offline, "plugin capability VolumeExpansion ONLINE or OFFLINE (an online-capable driver also grows unpublished volumes)"},
		{"volumeLimits", f.MaxVolumesPerNode > 0, fmt.Sprintf("NodeGetInfo max_volumes_per_node is %d", f.MaxVolumesPerNode)},
		{"topology", hasService(f.Plugin, csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS) && len(f.Topology) > 0, "plugin capability VOLUME_ACCESSIBILITY_CONSTRAINTS and a topology segment in NodeGetInfo"},
		{"singleNodeVolume", singleNode, "the topology segment names one node: a volume lives on one node"},
		{"capacity", has(csi.ControllerServiceCapability_RPC_GET_CAPACITY) && f.StorageCapacity, "controller capability GET_CAPACITY and CSIDriver storageCapacity"},
		{"readWriteOncePod", has(csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER), "controller capability SINGLE_NODE_MULTI_WRITER (single-writer access modes)"},
		{"multiplePVsSameID", true, "publishing is keyed by volume ID and target path, not by PV"},
		{"RWX", false, "volumes are node-local: no MULTI_NODE access modes"},
		{"capReadOnlyMany", false, "volumes are node-local: no MULTI_NODE access modes"},
	}
	return c
}

// Build returns the definition for the facts.
func Build(f Facts) Definition {
	var d Definition
	d.StorageClass.FromExistingClassName = f.StorageClass
	caps := map[string]bool{}
	for _, c := range Capabilities(f) {
		caps[c.Name] = c.Value
	}
	d.DriverInfo = DriverInfo{
		Name:               f.Name,
		SupportedSizeRange: SizeRange{Min: f.MinSize},
		// Volumes are directories on the pool's filesystem: there is no fsType to choose.
		SupportedFsType:   map[string]struct{}{"": {}},
		Capabilities:      caps,
		StressTestOptions: &StressTestOptions{NumPods: 5, NumRestarts: 3},
	}
	for k := range f.Topology {
		d.DriverInfo.TopologyKeys = append(d.DriverInfo.TopologyKeys, k)
	}
	sort.Strings(d.DriverInfo.TopologyKeys)
	return d
}

// Explain lists each capability with its value and reason, one per line, as YAML comments.
func Explain(f Facts) string {
	var b strings.Builder
	for _, c := range Capabilities(f) {
		fmt.Fprintf(&b, "# %-20s %-5v %s\n", c.Name, c.Value, c.Reason)
	}
	return b.String()
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func hasService(caps []*csi.PluginCapability, t csi.PluginCapability_Service_Type) bool {
	for _, c := range caps {
		if c.GetService().GetType() == t {
			return true
		}
	}
	return false
}

func expansion(caps []*csi.PluginCapability) (online, offline bool) {
	for _, c := range caps {
		switch c.GetVolumeExpansion().GetType() {
		case csi.PluginCapability_VolumeExpansion_ONLINE:
			online, offline = true, true
		case csi.PluginCapability_VolumeExpansion_OFFLINE:
			offline = true
		}
	}
	return online, offline
}

func firstValue(m map[string]string) string {
	for _, v := range m {
		return v
	}
	return ""
}
