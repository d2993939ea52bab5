// Package finalizer adds a reconciler's finalizer to the object it keeps.
package finalizer

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// Ensure adds name to obj's finalizers when it is missing. It patches, not updates: an update
// sends the object back as the controller decoded it, which can differ from what is stored (an
// empty userData or list dropped, a quantity written canonically), and the API server refuses
// that as a change to an immutable spec or as invalid. The optimistic lock keeps a concurrent
// change from being overwritten.
func Ensure(ctx context.Context, c client.Client, obj client.Object, name string) error {
	if controllerutil.ContainsFinalizer(obj, name) {
		return nil
	}
	before, ok := obj.DeepCopyObject().(client.Object)
	if !ok {
		return fmt.Errorf("add finalizer to %s: cannot copy the object", obj.GetName())
	}
	controllerutil.AddFinalizer(obj, name)
	if err := c.Patch(ctx, obj, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("add finalizer %s to %s: %w", name, obj.GetName(), err)
	}
	return nil
}
