package driverdef

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

func facts() Facts {
	return Facts{
		Name: "csi.slimvirt.io",
		Plugin: []*csi.PluginCapability{
			{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS}}},
			{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
		},
		Controller: []csi.ControllerServiceCapability_RPC_Type{
			csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME, csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
			csi.ControllerServiceCapability_RPC_EXPAND_VOLUME, csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		},
		Node:          []csi.NodeServiceCapability_RPC_Type{csi.NodeServiceCapability_RPC_EXPAND_VOLUME},
		NodeID:        "node-a",
		Topology:      map[string]string{"topology.csi.slimvirt.io/node": "node-a"},
		Block:         true,
		FSGroupPolicy: "File", StorageCapacity: true, StorageClass: "slimvirt", AllowExpansion: true, MinSize: "1Mi",
	}
}

// TestBuild: each capability follows the driver's own answers, and the definition names the
// class, the topology key and the default filesystem type the suite needs.
func TestBuild(t *testing.T) {
	d := Build(facts())
	want := map[string]bool{
		"persistence": true, "block": true, "pvcDataSource": true, "snapshotDataSource": false,
		"controllerExpansion": true, "nodeExpansion": true, "onlineExpansion": true, "offlineExpansion": true,
		"topology": true, "singleNodeVolume": true, "capacity": true, "volumeLimits": false, "fsGroup": true, "RWX": false,
	}
	for k, v := range want {
		if got, ok := d.DriverInfo.Capabilities[k]; !ok || got != v {
			t.Errorf("capability %s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if d.StorageClass.FromExistingClassName != "slimvirt" || d.DriverInfo.Name != "csi.slimvirt.io" {
		t.Errorf("class %q, name %q", d.StorageClass.FromExistingClassName, d.DriverInfo.Name)
	}
	if len(d.DriverInfo.TopologyKeys) != 1 || d.DriverInfo.TopologyKeys[0] != "topology.csi.slimvirt.io/node" {
		t.Errorf("topology keys %v", d.DriverInfo.TopologyKeys)
	}
	if _, ok := d.DriverInfo.SupportedFsType[""]; !ok {
		t.Error("the default fsType is not supported")
	}
}

// TestCapabilitiesFollowTheDriver: a driver that gains snapshots, a volume limit or loses
// block volumes or expansion gets the matching definition, without editing it by hand.
func TestCapabilitiesFollowTheDriver(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Facts)
		cap    string
		want   bool
	}{
		{"snapshots", func(f *Facts) {
			f.Controller = append(f.Controller, csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT)
		}, "snapshotDataSource", true},
		{"volume limit", func(f *Facts) { f.MaxVolumesPerNode = 64 }, "volumeLimits", true},
		{"no block", func(f *Facts) { f.Block = false }, "block", false},
		{"class without expansion", func(f *Facts) { f.AllowExpansion = false }, "controllerExpansion", false},
		{"offline only", func(f *Facts) { f.Plugin = f.Plugin[:1] }, "onlineExpansion", false},
		{"topology of many nodes", func(f *Facts) { f.Topology = map[string]string{"zone": "a"} }, "singleNodeVolume", false},
		{"no fsGroup policy", func(f *Facts) { f.FSGroupPolicy = "None" }, "fsGroup", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := facts()
			c.change(&f)
			if got := Build(f).DriverInfo.Capabilities[c.cap]; got != c.want {
				t.Fatalf("%s = %v, want %v", c.cap, got, c.want)
			}
		})
	}
}
