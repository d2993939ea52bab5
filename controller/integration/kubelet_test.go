package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

const (
	waitTimeout = 30 * time.Second
	pollEvery   = 100 * time.Millisecond
	testNode    = "node-1"
)

// newNamespace makes a namespace of the test's own, so tests never see each other's objects.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(fmt.Sprintf("t-%s-%s", rand.String(4), sanitize(t.Name())))
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.c.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return name
}

func sanitize(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	return string(b)
}

// eventually polls cond until it returns true or the timeout passes; the last error says why.
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		time.Sleep(pollEvery)
	}
	t.Fatalf("timed out waiting for %s: %v", what, last)
}

func getVMI(t *testing.T, ns, name string) *v1.VirtualMachineInstance {
	t.Helper()
	vmi := &v1.VirtualMachineInstance{}
	if err := env.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, vmi); err != nil {
		t.Fatalf("get vmi %s: %v", name, err)
	}
	return vmi
}

// waitPhase waits for the VMI to reach phase and returns it.
func waitPhase(t *testing.T, ns, name string, phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	t.Helper()
	var vmi *v1.VirtualMachineInstance
	eventually(t, fmt.Sprintf("vmi %s phase %s", name, phase), func() (bool, error) {
		vmi = getVMI(t, ns, name)
		return vmi.Status.Phase == phase, fmt.Errorf("phase is %q (reason %q)", vmi.Status.Phase, vmi.Status.Reason)
	})
	return vmi
}

// launcherPod waits for the VMI's launcher pod, signed and released for scheduling, and
// returns it.
func launcherPod(t *testing.T, ns, vmiName string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, "launcher pod of "+vmiName, func() (bool, error) {
		pods := podsOf(t, ns, vmiName)
		if len(pods) != 1 {
			return false, fmt.Errorf("%d pods", len(pods))
		}
		pod = &pods[0]
		if len(pod.Spec.SchedulingGates) > 0 {
			return false, fmt.Errorf("pod %s is held by %v", pod.Name, pod.Spec.SchedulingGates)
		}
		return true, nil
	})
	return pod
}

// computeOf is the launcher pod's compute container.
func computeOf(t *testing.T, pod *corev1.Pod) corev1.Container {
	t.Helper()
	for _, c := range pod.Spec.Containers {
		if c.Name == launcherpod.ComputeContainer {
			return c
		}
	}
	t.Fatalf("pod %s has no %s container", pod.Name, launcherpod.ComputeContainer)
	return corev1.Container{}
}

func podsOf(t *testing.T, ns, vmiName string) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := env.c.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{launcherpod.LabelVMI: vmiName}); err != nil {
		t.Fatalf("list pods: %v", err)
	}
	return pods.Items
}

// The kubelet's part, played by the tests.

func bindPod(t *testing.T, pod *corev1.Pod, node string) {
	t.Helper()
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}, Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	if err := env.c.SubResource("binding").Create(context.Background(), pod, binding); err != nil {
		t.Fatalf("bind pod %s: %v", pod.Name, err)
	}
}

// setPodStatus rewrites the pod's status, retrying on conflicts with the controller.
func setPodStatus(t *testing.T, ns, name string, mutate func(*corev1.PodStatus)) {
	t.Helper()
	eventually(t, "pod status update", func() (bool, error) {
		pod := &corev1.Pod{}
		if err := env.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, pod); err != nil {
			return false, err
		}
		mutate(&pod.Status)
		err := env.c.Status().Update(context.Background(), pod)
		return err == nil, err
	})
}

func runningStatus(ip string) func(*corev1.PodStatus) {
	return func(st *corev1.PodStatus) {
		now := metav1.Now()
		st.Phase = corev1.PodRunning
		st.PodIP = ip
		st.PodIPs = []corev1.PodIP{{IP: ip}}
		st.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		st.ContainerStatuses = []corev1.ContainerStatus{{
			Name: launcherpod.ComputeContainer, Ready: true, Image: launcherImage,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}}
	}
}

func terminatedStatus(code int32, reason, message string) func(*corev1.PodStatus) {
	return func(st *corev1.PodStatus) {
		st.Phase = corev1.PodFailed
		if code == 0 {
			st.Phase = corev1.PodSucceeded
		}
		st.ContainerStatuses = []corev1.ContainerStatus{{
			Name: launcherpod.ComputeContainer, Image: launcherImage,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: message}},
		}}
	}
}

// forceDelete removes a pod as the kubelet does once its containers are gone.
func forceDelete(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	err := env.c.Delete(context.Background(), pod, client.GracePeriodSeconds(0))
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s: %v", pod.Name, err)
	}
}

func condition(vmi *v1.VirtualMachineInstance, typ v1.VirtualMachineInstanceConditionType) *v1.VirtualMachineInstanceCondition {
	for i := range vmi.Status.Conditions {
		if vmi.Status.Conditions[i].Type == typ {
			return &vmi.Status.Conditions[i]
		}
	}
	return nil
}

func objectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name}
}
