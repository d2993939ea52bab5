//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// hostileNetVMI is a bridged VMI on the pod network; %[2]s is its interface's extra fields.
const hostileNetVMI = `apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineInstance
metadata:
  name: %[1]s
spec:
  terminationGracePeriodSeconds: 10
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: containerdisk, disk: {bus: virtio}}
      interfaces:
      - {name: default, bridge: {}%[2]s}
  networks:
  - {name: default, pod: {}}
  volumes:
  - name: containerdisk
    containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}
`

// tenantVMIRunning applies a VMI as the tenant and waits for it to run; it returns the VMI.
func tenantVMIRunning(t *testing.T, tn *tenant, name, ifaceExtra string) *v1alpha1.VirtualMachineInstance {
	t.Helper()
	tn.apply(t, fmt.Sprintf(hostileNetVMI, name, ifaceExtra))
	var vmi *v1alpha1.VirtualMachineInstance
	eventually(t, 6*time.Minute, "VMI "+name+" Running", func() (bool, error) {
		var err error
		vmi, err = getVMI(t, tn.ns, name)
		if err != nil {
			return false, err
		}
		if vmi.Status.Phase.IsFinal() {
			t.Fatalf("VMI %s ended in phase %s: %s", name, vmi.Status.Phase, vmi.Status.Reason)
		}
		return vmi.Status.Phase == v1alpha1.Running && len(vmi.Status.Interfaces) > 0 && vmi.Status.Interfaces[0].IP != "", fmt.Errorf("phase %s", vmi.Status.Phase)
	})
	return vmi
}

// guestAnswers says whether the guest's web server at ip answers a pod of the namespace.
func guestAnswers(t *testing.T, ns, client, ip string) bool {
	t.Helper()
	page := runClientPod(t, ns, client, "for i in $(seq 1 20); do timeout 5 wget -q -O- http://"+ip+"/ && exit 0; sleep 2; done; exit 1")
	return strings.Contains(page, "slimvirt guest")
}

// TestHostileNetworkReplayedAnnotation: a tenant copies the signed annotations of its deleted
// launcher pod onto a plain pod of the same name. The CNI plugin (root on the node) must not
// act on them: the signature names the deleted pod's UID, so the new pod's network namespace
// is the cluster CNI's, untouched.
func TestHostileNetworkReplayedAnnotation(t *testing.T) {
	ctx := context.Background()
	tn := newTenant(t, "hostile-net-replay", "")
	vmi := tenantVMIRunning(t, tn, "replayed", "")
	podName := vmi.Status.LauncherPod
	launcher := &corev1.Pod{}
	if err := tn.client.Get(ctx, client.ObjectKey{Namespace: tn.ns, Name: podName}, launcher); err != nil {
		t.Fatalf("tenant reads its launcher pod: %v", err)
	}
	copied := map[string]string{}
	for _, k := range []string{launcherpod.AnnotationInterfaces, launcherpod.AnnotationSignature} {
		v, ok := launcher.Annotations[k]
		if !ok {
			t.Fatalf("launcher pod %s has no annotation %s", podName, k)
		}
		copied[k] = v
	}

	if out, err := tn.kubectl("delete", "vmi", vmi.Name, "--wait=true", "--timeout=120s"); err != nil {
		t.Fatalf("tenant deletes the VMI: %v\n%s", err, out)
	}
	eventually(t, 2*time.Minute, "launcher pod "+podName+" gone", func() (bool, error) {
		err := tn.client.Get(ctx, client.ObjectKey{Namespace: tn.ns, Name: podName}, &corev1.Pod{})
		return client.IgnoreNotFound(err) == nil && err != nil, err
	})

	replay := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: tn.ns, Annotations: copied},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "toolbox", Image: "slimvirt.io/toolbox:dev", ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"/bin/sh", "-c", "exec sleep 3600"},
		}}},
	}
	if err := tn.client.Create(ctx, replay); err != nil {
		t.Fatalf("tenant creates a pod with the copied annotations: %v", err)
	}
	t.Cleanup(func() { _ = tn.client.Delete(context.Background(), replay, client.GracePeriodSeconds(0)) })
	var ip string
	eventually(t, 3*time.Minute, "replayed pod running", func() (bool, error) {
		p := &corev1.Pod{}
		if err := tn.client.Get(ctx, client.ObjectKeyFromObject(replay), p); err != nil {
			return false, err
		}
		ip = p.Status.PodIP
		return p.Status.Phase == corev1.PodRunning && ip != "", fmt.Errorf("phase %s", p.Status.Phase)
	})
	links, err := tn.kubectl("exec", podName, "--", "ip", "link")
	if err != nil {
		t.Fatalf("tenant runs ip link in the pod: %v\n%s", err, links)
	}
	for _, rewired := range []string{"k6t-eth0", "tap0", "eth0-nic"} {
		if strings.Contains(links, rewired) {
			t.Errorf("the replayed annotation rewired the pod's netns (%s):\n%s", rewired, links)
		}
	}
	addrs, err := tn.kubectl("exec", podName, "--", "ip", "-4", "addr", "show", "eth0")
	if err != nil || !strings.Contains(addrs, " "+ip+"/") {
		t.Errorf("eth0 no longer holds the pod IP %s: %v\n%s", ip, err, addrs)
	}
}

// TestHostileNetworkMACTakeover: a tenant's VMI asking for the MAC of another VM on the node is
// refused by the CNI plugin with a reason that names the MAC, and the other VM keeps answering;
// a MAC that is not locally administered is refused by the controller before any pod is made.
func TestHostileNetworkMACTakeover(t *testing.T) {
	ctx := context.Background()
	const mac = "02:5a:e2:e0:00:01"
	victims := newTenant(t, "hostile-net-victim", "")
	victim := tenantVMIRunning(t, victims, "victim", ", macAddress: '"+mac+"'")
	ip := victim.Status.Interfaces[0].IP
	if !guestAnswers(t, victims.ns, "victim-client-before", ip) {
		t.Fatalf("the victim VM at %s does not answer to begin with", ip)
	}

	tn := newTenant(t, "hostile-net-mac", "")
	tn.apply(t, fmt.Sprintf(hostileNetVMI, "thief", ", macAddress: '"+mac+"'"))
	var refusal string
	eventually(t, 3*time.Minute, "the thief's launcher pod refused by the CNI plugin", func() (bool, error) {
		vmi, err := getVMI(t, tn.ns, "thief")
		if err != nil || vmi.Status.LauncherPod == "" {
			return false, err
		}
		var events eventsv1.EventList
		if err := tn.client.List(ctx, &events, client.InNamespace(tn.ns)); err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Regarding.Name == vmi.Status.LauncherPod && strings.Contains(e.Note, "refuse guest MAC") {
				refusal = e.Note
				return true, nil
			}
		}
		return false, fmt.Errorf("phase %s, no refusal event yet", vmi.Status.Phase)
	})
	if !strings.Contains(refusal, mac) || !strings.Contains(refusal, "already in use on this node") {
		t.Errorf("refusal %q does not name the MAC and why", refusal)
	}
	t.Logf("refusal the tenant sees: %s", refusal)
	if vmi, _ := getVMI(t, tn.ns, "thief"); vmi.Status.Phase == v1alpha1.Running {
		t.Errorf("the VMI with the stolen MAC is Running")
	}
	if !guestAnswers(t, victims.ns, "victim-client-after", ip) {
		t.Errorf("the victim VM at %s stopped answering", ip)
	}

	tn.apply(t, fmt.Sprintf(hostileNetVMI, "vendor", ", macAddress: '00:16:3e:12:34:56'"))
	eventually(t, time.Minute, "MACAddressRefused on the VMI", func() (bool, error) {
		vmi, err := getVMI(t, tn.ns, "vendor")
		if err != nil {
			return false, err
		}
		for _, c := range vmi.Status.Conditions {
			if c.Reason == "MACAddressRefused" && strings.Contains(c.Message, "00:16:3e:12:34:56") {
				return vmi.Status.LauncherPod == "", fmt.Errorf("launcher pod %s made", vmi.Status.LauncherPod)
			}
		}
		return false, fmt.Errorf("conditions %+v", vmi.Status.Conditions)
	})
}
