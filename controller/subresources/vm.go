package subresources

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// vmRequest carries out start, stop and restart: it annotates the VM as slimctl does, and the
// controller acts on the annotation. Requests that make no sense in the VM's state are refused
// with a Conflict, as KubeVirt's virt-api refuses them. When the VM changes between the read and
// the write (the controller writes its status all the time), the request is judged again on the
// VM as it is now, a few times, before the caller is told to try again.
func (s *Server) vmRequest(w http.ResponseWriter, r *http.Request, t target) {
	ctx := r.Context()
	log := s.requestLog(ctx, t)
	var edit annotationEdit
	var refused *refusal
	err := retry.RetryOnConflict(requestBackoff, func() error {
		vm := &v1.VirtualMachine{}
		if err := s.get(ctx, t, vm); err != nil {
			return err
		}
		var vmi *v1.VirtualMachineInstance
		found := &v1.VirtualMachineInstance{}
		vmiTarget := t
		vmiTarget.resource = api.VMIs
		switch err := s.get(ctx, vmiTarget, found); {
		case err == nil:
			vmi = found
		case !apierrors.IsNotFound(err):
			return err
		}
		var err error
		if edit, err = decideVMRequest(t.subresource, vm, vmi, time.Now()); err != nil {
			refused = &refusal{err}
			return nil
		}
		// The optimistic lock makes the decision hold for the VM it was made from.
		patch := client.MergeFromWithOptions(vm.DeepCopy(), client.MergeFromWithOptimisticLock{})
		edit.apply(vm)
		return s.cfg.Client.Patch(ctx, vm, patch)
	})
	switch {
	case refused != nil:
		log.Info("refused", "reason", refused.Error())
		s.writeError(w, r, apierrors.NewConflict(t.groupResource(), t.name, refused.err))
	case apierrors.IsConflict(err):
		s.writeError(w, r, apierrors.NewConflict(t.groupResource(), t.name, errors.New("the VM kept changing while the request was made; try again")))
	case apierrors.IsNotFound(err) || apierrors.IsInternalError(err):
		s.writeError(w, r, err) // get's, already said in the caller's terms
	case err != nil:
		log.Error("annotate VM", "error", err)
		s.writeError(w, r, apierrors.NewInternalError(fmt.Errorf("annotate VM %s", t)))
	default:
		log.Info("requested", "annotations", edit.set)
		w.WriteHeader(http.StatusAccepted)
	}
}

// requestBackoff spaces the tries of a request that met a concurrent write: eight, from 10 ms
// doubling to at most a second, so a read from a cache a little behind catches up.
var requestBackoff = wait.Backoff{Steps: 8, Duration: 10 * time.Millisecond, Factor: 2, Jitter: 0.1, Cap: time.Second}

// refusal is a request the VM's state does not allow.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }

// annotationEdit is the change a request makes to the VM's request annotations.
type annotationEdit struct {
	set    map[string]string
	remove []string
}

func (e annotationEdit) apply(vm *v1.VirtualMachine) {
	if vm.Annotations == nil {
		vm.Annotations = map[string]string{}
	}
	for _, k := range e.remove {
		delete(vm.Annotations, k)
	}
	for k, v := range e.set {
		vm.Annotations[k] = v
	}
}

// decideVMRequest is KubeVirt's virt-api's judgement of a start, stop or restart request,
// given the VM and its VMI (nil when there is none): the annotations to write, or why the
// request conflicts with the VM's state. The latest request wins: start withdraws a pending
// stop, stop a pending start or restart, restart a pending stop. A restart names the VMI it
// replaces by UID, so the controller replaces that one exactly once.
func decideVMRequest(action string, vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance, now time.Time) (annotationEdit, error) {
	strategy := vm.EffectiveRunStrategy()
	stamp := now.UTC().Format(time.RFC3339Nano)
	exists := vmi != nil && !vmi.Status.Phase.IsFinal()
	switch action {
	case api.Start:
		switch {
		case exists && vmi.Status.Phase != v1.Unknown && vmi.Status.Phase != "":
			return annotationEdit{}, errors.New("VM is already running")
		case strategy == v1.RunStrategyAlways || strategy == v1.RunStrategyOnce:
			return annotationEdit{}, fmt.Errorf("runStrategy %s does not support manual start requests", strategy)
		case strategy == v1.RunStrategyRerunOnFailure && vmi != nil && vmi.Status.Phase == v1.Failed:
			return annotationEdit{}, fmt.Errorf("runStrategy %s does not support starting a VM from the failed state", strategy)
		}
		return annotationEdit{
			set:    map[string]string{v1.AnnotationStartRequested: stamp},
			remove: []string{v1.AnnotationStopRequested},
		}, nil
	case api.Stop:
		if !exists && strategy != v1.RunStrategyAlways && strategy != v1.RunStrategyOnce {
			return annotationEdit{}, errors.New("VM is not running")
		}
		return annotationEdit{
			set:    map[string]string{v1.AnnotationStopRequested: stamp},
			remove: []string{v1.AnnotationStartRequested, v1.AnnotationRestartRequested},
		}, nil
	case api.Restart:
		switch {
		case strategy == v1.RunStrategyHalted || strategy == v1.RunStrategyOnce:
			return annotationEdit{}, fmt.Errorf("runStrategy %s does not support manual restart requests", strategy)
		case vmi == nil:
			return annotationEdit{}, errors.New("VM is not running")
		}
		return annotationEdit{
			set:    map[string]string{v1.AnnotationRestartRequested: string(vmi.UID)},
			remove: []string{v1.AnnotationStopRequested},
		}, nil
	}
	return annotationEdit{}, fmt.Errorf("unknown VM request %q", action)
}

// migrate keeps the route (and with it the verb and RBAC) of a feature this release lacks.
func (s *Server) migrate(w http.ResponseWriter, r *http.Request, t target) {
	s.requestLog(r.Context(), t).Info("refused: live migration is not available")
	s.writeError(w, r, &apierrors.StatusError{ErrStatus: notImplemented("live migration is not available in this slimvirt release")})
}
