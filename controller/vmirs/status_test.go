package vmirs

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func vmi(name string, phase v1.VirtualMachineInstancePhase, ready bool, age int) v1.VirtualMachineInstance {
	v := v1.VirtualMachineInstance{}
	v.Name = name
	v.Status.Phase = phase
	v.CreationTimestamp = metav1.NewTime(time.Unix(int64(1000-age), 0))
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	v.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VMIReady, Status: status}}
	return v
}

func names(vmis []*v1.VirtualMachineInstance) []string {
	var out []string
	for _, v := range vmis {
		out = append(out, v.Name)
	}
	return out
}

func TestPlanReplicas(t *testing.T) {
	deleting := vmi("going", v1.Running, true, 5)
	deleting.DeletionTimestamp = &metav1.Time{}
	tests := []struct {
		name       string
		want       int
		vmis       []v1.VirtualMachineInstance
		wantCreate int
		wantDelete []string
	}{
		{"empty, want 3", 3, nil, 3, nil},
		{"enough", 2, []v1.VirtualMachineInstance{vmi("a", v1.Running, true, 1), vmi("b", v1.Pending, false, 1)}, 0, nil},
		{"ended ones are replaced", 2, []v1.VirtualMachineInstance{vmi("a", v1.Running, true, 1), vmi("b", v1.Failed, false, 1), vmi("c", v1.Succeeded, false, 1)}, 1, []string{"b", "c"}},
		{"deleting ones are not counted", 1, []v1.VirtualMachineInstance{deleting}, 1, nil},
		{"scale down: pending first, then not ready, then newest", 1, []v1.VirtualMachineInstance{
			vmi("old-ready", v1.Running, true, 9), vmi("new-ready", v1.Running, true, 1),
			vmi("not-ready", v1.Running, false, 5), vmi("pending", v1.Scheduling, false, 7)}, 0, []string{"pending", "not-ready", "new-ready"}},
		{"scale to zero", 0, []v1.VirtualMachineInstance{vmi("a", v1.Running, true, 1)}, 0, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := PlanReplicas(tt.want, tt.vmis)
			if p.Create != tt.wantCreate {
				t.Errorf("create %d, want %d", p.Create, tt.wantCreate)
			}
			got := names(p.Delete)
			if len(got) != len(tt.wantDelete) {
				t.Fatalf("delete %v, want %v", got, tt.wantDelete)
			}
			for i := range got {
				if got[i] != tt.wantDelete[i] {
					t.Errorf("delete %v, want %v", got, tt.wantDelete)
				}
			}
		})
	}
}

func TestComputeStatus(t *testing.T) {
	rs := &v1.VirtualMachineInstanceReplicaSet{}
	rs.Generation = 4
	rs.Spec.Paused = true
	vmis := []v1.VirtualMachineInstance{vmi("a", v1.Running, true, 1), vmi("b", v1.Scheduled, false, 1), vmi("c", v1.Failed, false, 1)}
	st := ComputeStatus(rs, vmis, "app=web", &Failure{"FailedCreate", "quota"}, metav1.Now())
	if st.Replicas != 2 || st.ReadyReplicas != 1 || st.LabelSelector != "app=web" || st.ObservedGeneration != 4 {
		t.Errorf("status = %+v", st)
	}
	types := map[v1.VirtualMachineInstanceReplicaSetConditionType]bool{}
	for _, c := range st.Conditions {
		types[c.Type] = true
	}
	if !types[v1.ReplicaSetPaused] || !types[v1.ReplicaSetReplicaFailure] {
		t.Errorf("conditions = %+v", st.Conditions)
	}
	rs.Status = st
	rs.Spec.Paused = false
	if st := ComputeStatus(rs, vmis, "app=web", nil, metav1.Now()); len(st.Conditions) != 0 {
		t.Errorf("conditions kept after they cleared: %+v", st.Conditions)
	}
}

// TestCreateFailureMessage: two creates refused for the same reason give the same message,
// though the API server named each VMI differently.
func TestCreateFailureMessage(t *testing.T) {
	refusal := func(name string) error {
		return apierrors.NewInvalid(v1.GroupVersion.WithKind("VirtualMachineInstance").GroupKind(), name, field.ErrorList{
			field.Invalid(field.NewPath("metadata", "labels"), "", "name part must be non-empty"),
		})
	}
	a, b := createFailureMessage(refusal("web-abcde")), createFailureMessage(refusal("web-fghij"))
	if a != b {
		t.Errorf("messages differ:\n%s\n%s", a, b)
	}
	if want := "metadata.labels: Invalid value"; !strings.Contains(a, want) || strings.Contains(a, "web-") {
		t.Errorf("message %q: want the cause (%q) without the VMI's name", a, want)
	}
	if got := createFailureMessage(errors.New("connection refused")); got != "connection refused" {
		t.Errorf("a plain error became %q", got)
	}
}
