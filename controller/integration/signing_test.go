package integration

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/controller/vmi"
)

// TestLauncherPodSignedForItsUID: the controller makes the launcher pod held by a scheduling
// gate, then signs its interfaces for the pod's UID and lifts the gate in one patch. The
// signature does not verify for another pod object of the same name (a replay onto a pod made
// again), and the patch adds little to the start of a VM (measured here, from the pod first
// seen held to it seen released, polling every millisecond).
func TestLauncherPodSignedForItsUID(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	const vmis = 5
	for i := range vmis {
		vm := loadExampleVMI(t, ns)
		vm.Name = fmt.Sprintf("signed-%d", i)
		if err := env.c.Create(ctx, vm); err != nil {
			t.Fatalf("create vmi: %v", err)
		}
	}
	created, released := map[string]time.Time{}, map[string]time.Time{}
	pods := map[string]*corev1.Pod{}
	// held are the pods seen held by the gate; a release faster than one poll is not seen.
	held := map[string]bool{}
	deadline := time.Now().Add(waitTimeout)
	for len(released) < vmis {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d of %d launcher pods seen, %d released", len(created), vmis, len(released))
		}
		var list corev1.PodList
		if err := env.c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatalf("list pods: %v", err)
		}
		now := time.Now()
		for i := range list.Items {
			pod := &list.Items[i]
			gated := slices.ContainsFunc(pod.Spec.SchedulingGates, func(g corev1.PodSchedulingGate) bool { return g.Name == vmi.SchedulingGateSigned })
			if _, seen := created[pod.Name]; !seen {
				created[pod.Name] = now
				if gated {
					held[pod.Name] = true
					if sig, ok := pod.Annotations[launcherpod.AnnotationSignature]; ok {
						t.Errorf("pod %s was made with a signature (%q) that cannot name its UID", pod.Name, sig)
					}
				}
			}
			if !gated {
				if _, done := released[pod.Name]; !done {
					released[pod.Name] = now
					pods[pod.Name] = pod
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
	gatedSeen := len(held)
	if gatedSeen == 0 {
		t.Errorf("no launcher pod was ever seen held by the %s scheduling gate", vmi.SchedulingGateSigned)
	}
	var took []time.Duration
	for name, pod := range pods {
		took = append(took, released[name].Sub(created[name]))
		value := pod.Annotations[launcherpod.AnnotationInterfaces]
		sig := pod.Annotations[launcherpod.AnnotationSignature]
		self := launcherpod.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
		if err := launcherpod.VerifyPod(env.key, self, value, sig); err != nil {
			t.Errorf("pod %s: the signature does not verify for the pod itself: %v", name, err)
		}
		again := self
		again.UID = "00000000-0000-4000-8000-000000000000"
		if err := launcherpod.VerifyPod(env.key, again, value, sig); err == nil {
			t.Errorf("pod %s: the signature verifies for another pod of the same name", name)
		}
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("launcher pod seen held -> seen signed and released (one patch), %d pods (%d seen held): median %v, max %v", len(took), gatedSeen, took[len(took)/2], took[len(took)-1])
}

// TestSignsPodLeftGated: a launcher pod a stopped controller made but did not sign (still held
// by the gate) is signed and released by the next reconcile.
func TestSignsPodLeftGated(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	vm := loadExampleVMI(t, ns)
	if err := env.c.Create(ctx, vm); err != nil {
		t.Fatalf("create vmi: %v", err)
	}
	pod := launcherPod(t, ns, vm.Name)
	// Put the pod back as a controller that died between create and sign left it: a new pod
	// cannot get a gate back, so make one by hand, owned by the VMI, named as its status says.
	if err := env.c.Delete(ctx, pod); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	eventually(t, "pod gone", func() (bool, error) { return len(podsOf(t, ns, vm.Name)) == 0, nil })
	left := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: ns, Labels: pod.Labels, OwnerReferences: pod.OwnerReferences,
			Annotations: map[string]string{launcherpod.AnnotationInterfaces: `[{"name":"default","binding":"masquerade"}]`}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: launcherpod.ComputeContainer, Image: launcherImage}},
			SchedulingGates: []corev1.PodSchedulingGate{{Name: vmi.SchedulingGateSigned}}},
	}
	if err := env.c.Create(ctx, left); err != nil {
		t.Fatalf("create gated pod: %v", err)
	}
	got := launcherPod(t, ns, vm.Name)
	self := launcherpod.PodRef{Namespace: ns, Name: got.Name, UID: string(got.UID)}
	value := got.Annotations[launcherpod.AnnotationInterfaces]
	if err := launcherpod.VerifyPod(env.key, self, value, got.Annotations[launcherpod.AnnotationSignature]); err != nil {
		t.Errorf("the pod left gated is not signed for its UID: %v", err)
	}
	// What is signed is what the controller computes from the VMI, not what the pod carried.
	if !strings.Contains(value, `"binding":"bridge"`) {
		t.Errorf("signed interfaces %s, want the VMI's bridge interface", value)
	}
}

// TestMACAddressRefused: a VMI asking for a MAC that is not locally administered on the bridge
// binding, in a cluster that does not allow custom MACs, gets no launcher pod and says why.
func TestMACAddressRefused(t *testing.T) {
	needController(t)
	ctx := context.Background()
	ns := newNamespace(t)
	vm := loadExampleVMI(t, ns)
	vm.Spec.Domain.Devices.Interfaces[0].MacAddress = "00:16:3e:12:34:56"
	if err := env.c.Create(ctx, vm); err != nil {
		t.Fatalf("create vmi: %v", err)
	}
	var cond *v1.VirtualMachineInstanceCondition
	eventually(t, "condition "+vmi.ReasonMACAddressRefused, func() (bool, error) {
		cond = condition(getVMI(t, ns, vm.Name), v1.VMISynchronized)
		return cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == vmi.ReasonMACAddressRefused, fmt.Errorf("condition %+v", cond)
	})
	if !strings.Contains(cond.Message, "00:16:3e:12:34:56 is not locally administered") || !strings.Contains(cond.Message, "--allow-custom-macs") {
		t.Errorf("message %q does not say which MAC and why", cond.Message)
	}
	waitEvent(t, ns, vm.Name, vmi.ReasonMACAddressRefused)
	if n := len(podsOf(t, ns, vm.Name)); n != 0 {
		t.Errorf("%d launcher pods made for a refused MAC", n)
	}
	if p := getVMI(t, ns, vm.Name).Status.Phase; p != v1.Pending {
		t.Errorf("phase %s, want Pending", p)
	}
}
