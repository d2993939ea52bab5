package manager

import (
	"fmt"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/slimvirt/slimvirt/controller/vmrestore"
	"github.com/slimvirt/slimvirt/controller/vmsnapshot"
)

// setupSnapshots registers the snapshot and restore reconcilers when the cluster serves CSI
// VolumeSnapshots (snapshot.storage.k8s.io/v1, installed with the snapshot-controller); without
// them there is nothing to snapshot with, and watching the missing kind would stop the manager.
func setupSnapshots(mgr ctrl.Manager, cfg Config, rec recorder.EventRecorder) error {
	served, err := volumeSnapshotsServed(cfg)
	if err != nil {
		return err
	}
	if !served {
		ctrl.Log.WithName("setup").Info("snapshots off: the API server does not serve VolumeSnapshots", "groupVersion", snapv1.SchemeGroupVersion.String())
		return nil
	}
	freezer, err := vmsnapshot.NewAPIFreezer(cfg.RestConfig)
	if err != nil {
		return err
	}
	snap := &vmsnapshot.Reconciler{Client: mgr.GetClient(), Recorder: rec, Freezer: freezer}
	if err := snap.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up vmsnapshot controller: %w", err)
	}
	restore := &vmrestore.Reconciler{Client: mgr.GetClient(), Recorder: rec}
	if err := restore.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up vmrestore controller: %w", err)
	}
	return nil
}

func volumeSnapshotsServed(cfg Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg.RestConfig)
	if err != nil {
		return false, fmt.Errorf("make a discovery client: %w", err)
	}
	list, err := dc.ServerResourcesForGroupVersion(snapv1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ask the API server for %s: %w", snapv1.SchemeGroupVersion, err)
	}
	for _, r := range list.APIResources {
		if r.Name == "volumesnapshots" {
			return true, nil
		}
	}
	return false, nil
}
