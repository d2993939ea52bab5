package requeue

import (
	"errors"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
)

func TestResult(t *testing.T) {
	conflict := apierrors.NewConflict(schema.GroupResource{Resource: "vmis"}, "x", errors.New("modified"))
	boom := errors.New("boom")
	tests := []struct {
		name        string
		err         error
		wantAfter   time.Duration
		wantErr     error
		wantFailure bool
	}{
		{"nil", nil, 0, nil, false},
		{"requeue", After(5*time.Second, "waiting"), 5 * time.Second, nil, false},
		{"wrapped requeue", fmt.Errorf("sync: %w", After(time.Second, "x")), time.Second, nil, false},
		{"conflict", fmt.Errorf("update status: %w", conflict), conflictRetry, nil, false},
		{"failure", boom, 0, boom, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Result(ctrl.Result{}, tt.err)
			if res.RequeueAfter != tt.wantAfter || !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Errorf("Result = %v, %v; want after %s, err %v", res, err, tt.wantAfter, tt.wantErr)
			}
			if IsFailure(tt.err) != tt.wantFailure {
				t.Errorf("IsFailure = %v", !tt.wantFailure)
			}
		})
	}
}
