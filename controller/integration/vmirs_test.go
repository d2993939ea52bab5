package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

func vmisOf(t *testing.T, ns string) []v1.VirtualMachineInstance {
	t.Helper()
	var list v1.VirtualMachineInstanceList
	if err := env.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []v1.VirtualMachineInstance
	for _, vmi := range list.Items {
		if vmi.DeletionTimestamp == nil {
			out = append(out, vmi)
		}
	}
	return out
}

func waitVMIs(t *testing.T, ns string, n int) []v1.VirtualMachineInstance {
	t.Helper()
	var vmis []v1.VirtualMachineInstance
	eventually(t, fmt.Sprintf("%d vmis", n), func() (bool, error) {
		vmis = vmisOf(t, ns)
		return len(vmis) == n, fmt.Errorf("%d vmis", len(vmis))
	})
	return vmis
}

func getRS(t *testing.T, ns, name string) *v1.VirtualMachineInstanceReplicaSet {
	t.Helper()
	rs := &v1.VirtualMachineInstanceReplicaSet{}
	if err := env.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

// scale uses the scale subresource, as `kubectl scale vmirs` and an HPA do.
func scale(t *testing.T, rs *v1.VirtualMachineInstanceReplicaSet, replicas int32) {
	t.Helper()
	eventually(t, "a scale update", func() (bool, error) {
		s := &autoscalingv1.Scale{}
		if err := env.c.SubResource("scale").Get(context.Background(), rs, s); err != nil {
			return false, err
		}
		s.Spec.Replicas = replicas
		err := env.c.SubResource("scale").Update(context.Background(), rs, client.WithSubResourceBody(s))
		return err == nil, err
	})
}

func TestReplicaSet(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	playKubelet(t, ns)
	tmpl := newVM(ns, "x", nil, nil).Spec.Template
	tmpl.ObjectMeta.Labels = map[string]string{"app": "web"}
	rs := &v1.VirtualMachineInstanceReplicaSet{
		ObjectMeta: objectMeta(ns, "web"),
		Spec: v1.VirtualMachineInstanceReplicaSetSpec{
			Replicas: ptr.To(int32(3)),
			Selector: &v1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: tmpl,
		},
	}
	if err := env.c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	vmis := waitVMIs(t, ns, 3)
	for _, vmi := range vmis {
		runVMI(t, ns, vmi.Name)
	}
	eventually(t, "status 3/3 ready", func() (bool, error) {
		st := getRS(t, ns, "web").Status
		return st.Replicas == 3 && st.ReadyReplicas == 3 && st.LabelSelector == "app=web", fmt.Errorf("%+v", st)
	})

	// The scale subresource reads status.replicas and the selector, as an HPA needs.
	s := &autoscalingv1.Scale{}
	if err := env.c.SubResource("scale").Get(ctx, rs, s); err != nil {
		t.Fatal(err)
	}
	if s.Status.Replicas != 3 || s.Status.Selector != "app=web" {
		t.Errorf("scale status = %+v", s.Status)
	}
	scale(t, rs, 5)
	waitVMIs(t, ns, 5)
	scale(t, rs, 1)
	left := waitVMIs(t, ns, 1)
	// Scaling down keeps the ready ones: the survivor is one that ran.
	if left[0].Status.Phase != v1.Running {
		t.Errorf("scale down kept a %s VMI over running ones", left[0].Status.Phase)
	}

	// A failed VMI is replaced.
	endVMI(t, ns, left[0].Name, 1)
	eventually(t, "a replacement", func() (bool, error) {
		now := vmisOf(t, ns)
		return len(now) == 1 && now[0].Name != left[0].Name, fmt.Errorf("%d vmis", len(now))
	})

	// Paused: nothing is made or deleted.
	eventually(t, "pausing", func() (bool, error) {
		rs = getRS(t, ns, "web")
		rs.Spec.Paused = true
		err := env.c.Update(ctx, rs)
		return err == nil, err
	})
	eventually(t, "the paused condition", func() (bool, error) {
		for _, c := range getRS(t, ns, "web").Status.Conditions {
			if c.Type == v1.ReplicaSetPaused {
				return true, nil
			}
		}
		return false, nil
	})
	scale(t, rs, 4)
	time.Sleep(1500 * time.Millisecond)
	if n := len(vmisOf(t, ns)); n != 1 {
		t.Errorf("a paused replica set went to %d VMIs", n)
	}

	// Deleting the replica set deletes its VMIs.
	if err := env.c.Delete(ctx, rs); err != nil {
		t.Fatal(err)
	}
	waitVMIs(t, ns, 0)
}

// TestReplicaSetAdoptsOrphans: a VMI the selector matches that has no controller is adopted
// (counted toward the replicas, not duplicated); one the selector does not match is left alone.
func TestReplicaSetAdoptsOrphans(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	playKubelet(t, ns)
	tmpl := newVM(ns, "x", nil, nil).Spec.Template
	orphan := func(name, app string) *v1.VirtualMachineInstance {
		vmi := &v1.VirtualMachineInstance{ObjectMeta: objectMeta(ns, name), Spec: *tmpl.Spec.DeepCopy()}
		vmi.Labels = map[string]string{"app": app}
		if err := env.c.Create(ctx, vmi); err != nil {
			t.Fatal(err)
		}
		return vmi
	}
	mine, other := orphan("orphan-web", "web"), orphan("orphan-db", "db")
	tmpl.ObjectMeta.Labels = map[string]string{"app": "web"}
	rs := &v1.VirtualMachineInstanceReplicaSet{
		ObjectMeta: objectMeta(ns, "web"),
		Spec: v1.VirtualMachineInstanceReplicaSetSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &v1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: tmpl,
		},
	}
	if err := env.c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	vmis := waitVMIs(t, ns, 3)
	// Give a controller that did not adopt time to make one VMI too many.
	time.Sleep(2 * time.Second)
	vmis = waitVMIs(t, ns, 3)
	owners := map[string]string{}
	for _, vmi := range vmis {
		if ref := metav1.GetControllerOf(&vmi); ref != nil {
			owners[vmi.Name] = ref.Name
		} else {
			owners[vmi.Name] = ""
		}
	}
	if owners[mine.Name] != "web" {
		t.Errorf("orphan %s not adopted: owners %v", mine.Name, owners)
	}
	if owners[other.Name] != "" {
		t.Errorf("%s, which the selector does not match, was taken: owners %v", other.Name, owners)
	}
	eventually(t, "status counts the adopted VMI", func() (bool, error) {
		got := getRS(t, ns, "web")
		return got.Status.Replicas == 2, fmt.Errorf("status.replicas %d", got.Status.Replicas)
	})
}
