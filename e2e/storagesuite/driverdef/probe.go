package driverdef

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// probeVolume is the name of the block volume the probe creates and deletes at once.
const probeVolume = "e2e-storage-driverdef-probe"

// Probe asks the driver at endpoint (a unix socket path) and the cluster what the driver can do.
func Probe(ctx context.Context, endpoint string, kube kubernetes.Interface, class string) (Facts, error) {
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return Facts{}, fmt.Errorf("connect to CSI driver at %s: %w", endpoint, err)
	}
	defer conn.Close()
	f := Facts{StorageClass: class, MinSize: "1Mi"}
	if err := probeCSI(ctx, conn, &f); err != nil {
		return Facts{}, err
	}
	drv, err := kube.StorageV1().CSIDrivers().Get(ctx, f.Name, metav1.GetOptions{})
	if err != nil {
		return Facts{}, fmt.Errorf("get CSIDriver %s: %w", f.Name, err)
	}
	if p := drv.Spec.FSGroupPolicy; p != nil {
		f.FSGroupPolicy = string(*p)
	}
	f.StorageCapacity = drv.Spec.StorageCapacity != nil && *drv.Spec.StorageCapacity
	sc, err := kube.StorageV1().StorageClasses().Get(ctx, class, metav1.GetOptions{})
	if err != nil {
		return Facts{}, fmt.Errorf("get StorageClass %s: %w", class, err)
	}
	if sc.Provisioner != f.Name {
		return Facts{}, fmt.Errorf("StorageClass %s provisions with %s, not %s", class, sc.Provisioner, f.Name)
	}
	f.AllowExpansion = sc.AllowVolumeExpansion != nil && *sc.AllowVolumeExpansion
	return f, nil
}

func probeCSI(ctx context.Context, conn *grpc.ClientConn, f *Facts) error {
	id := csi.NewIdentityClient(conn)
	info, err := id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil {
		return fmt.Errorf("GetPluginInfo: %w", err)
	}
	f.Name = info.GetName()
	pc, err := id.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("GetPluginCapabilities: %w", err)
	}
	f.Plugin = pc.GetCapabilities()
	ctrl := csi.NewControllerClient(conn)
	cc, err := ctrl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("ControllerGetCapabilities: %w", err)
	}
	for _, c := range cc.GetCapabilities() {
		f.Controller = append(f.Controller, c.GetRpc().GetType())
	}
	node := csi.NewNodeClient(conn)
	nc, err := node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetCapabilities: %w", err)
	}
	for _, c := range nc.GetCapabilities() {
		f.Node = append(f.Node, c.GetRpc().GetType())
	}
	ni, err := node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return fmt.Errorf("NodeGetInfo: %w", err)
	}
	f.NodeID, f.MaxVolumesPerNode = ni.GetNodeId(), ni.GetMaxVolumesPerNode()
	f.Topology = ni.GetAccessibleTopology().GetSegments()
	f.Block, err = probeBlock(ctx, ctrl)
	return err
}

// probeBlock creates a 1 MiB volume with block access and deletes it: whether the driver
// accepts it is whether it serves raw block volumes.
func probeBlock(ctx context.Context, ctrl csi.ControllerClient) (bool, error) {
	vol, err := ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:          probeVolume,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		}},
	})
	if err != nil {
		return false, nil //nolint:nilerr // a refusal is the answer: no block volumes
	}
	if _, err := ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.GetVolume().GetVolumeId()}); err != nil {
		return true, fmt.Errorf("delete the probe volume %s: %w", vol.GetVolume().GetVolumeId(), err)
	}
	return true, nil
}
