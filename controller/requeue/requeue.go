// Package requeue carries "try again later" out of a reconciler as an error value, so helpers
// deep in a reconcile can ask for it without threading a ctrl.Result back by hand.
package requeue

import (
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Error asks for the object to be reconciled again after After; it is not a failure.
type Error struct {
	After  time.Duration
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("requeue in %s: %s", e.After, e.Reason) }

// After returns an Error that requeues after d.
func After(d time.Duration, reason string) error { return &Error{After: d, Reason: reason} }

// conflictRetry is how soon an object is retried after a write lost an optimistic-lock race
// (a stale cache read); the watch event that made the cache current usually comes first.
const conflictRetry = 200 * time.Millisecond

// Result turns a reconcile's outcome into what controller-runtime expects: a requeue Error
// becomes a RequeueAfter result, and so does a conflict, which is a stale read and not a
// failure; any other error is returned as it is.
func Result(res ctrl.Result, err error) (ctrl.Result, error) {
	var rq *Error
	if errors.As(err, &rq) {
		return ctrl.Result{RequeueAfter: rq.After}, nil
	}
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	return res, err
}

// IsFailure says whether err is a real failure, not a requeue or a conflict.
func IsFailure(err error) bool {
	_, rerr := Result(ctrl.Result{}, err)
	return rerr != nil
}
