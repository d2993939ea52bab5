//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// TestLinuxVMI is the guide's first step: apply the Linux VMI, wait for it to run, read the
// guest's serial console, and reach the guest's web server from another pod by the VMI's IP.
func TestLinuxVMI(t *testing.T) {
	const ns, name = "default", "testvmi-nocloud2"
	ctx := context.Background()
	_, _ = kubectl(t, "delete", "-f", "../examples/vmi-linux.yaml", "--ignore-not-found", "--wait=true")

	start := time.Now()
	mustKubectl(t, "apply", "-f", "../examples/vmi-linux.yaml")
	t.Cleanup(func() {
		_, _ = kubectl(t, "delete", "-f", "../examples/vmi-linux.yaml", "--ignore-not-found", "--wait=true", "--timeout=90s")
	})

	var vmi *v1alpha1.VirtualMachineInstance
	eventually(t, 4*time.Minute, "VMI Running", func() (bool, error) {
		var err error
		vmi, err = getVMI(t, ns, name)
		if err != nil {
			return false, err
		}
		if vmi.Status.Phase.IsFinal() {
			t.Fatalf("VMI ended in phase %s: %s", vmi.Status.Phase, vmi.Status.Reason)
		}
		return vmi.Status.Phase == v1alpha1.Running, nil
	})
	toRunning := time.Since(start)
	if len(vmi.Status.Interfaces) == 0 || vmi.Status.Interfaces[0].IP == "" {
		t.Fatalf("Running VMI has no IP: %+v", vmi.Status)
	}
	ip := vmi.Status.Interfaces[0].IP
	pod := vmi.Status.LauncherPod
	if pod == "" {
		t.Fatalf("Running VMI names no launcher pod")
	}

	// The launcher copies the guest's serial console to its log; the guest prints its
	// marker once its DHCP lease is applied, with the address it got.
	var marker string
	eventually(t, 3*time.Minute, "guest marker on the serial console", func() (bool, error) {
		out, err := kubectl(t, "-n", ns, "logs", pod, "-c", "compute")
		for _, line := range strings.Split(out, "\n") {
			if i := strings.Index(line, "SLIMVIRT-GUEST-UP"); i >= 0 {
				marker = line[i:]
			}
		}
		return marker != "", err
	})
	toLease := time.Since(start)
	if !strings.Contains(marker, "ip="+ip) {
		t.Fatalf("guest leased another address than the VMI's %s: %q", ip, marker)
	}
	t.Logf("apply -> Running %.1fs, apply -> guest lease %.1fs; %s", toRunning.Seconds(), toLease.Seconds(), marker)

	// The VMI's labels are on the launcher pod, so Services select VMs.
	var got v1alpha1.VirtualMachineInstance
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &got); err != nil {
		t.Fatal(err)
	}
	out := mustKubectl(t, "-n", ns, "get", "pod", pod, "-o", "jsonpath={.metadata.labels}")
	for k, v := range got.Labels {
		if !strings.Contains(out, `"`+k+`":"`+v+`"`) {
			t.Errorf("launcher pod lacks the VMI label %s=%s: %s", k, v, out)
		}
	}

	// status.memoryOverhead: what the launcher pod asks for besides the guest's 1024M.
	var lp corev1.Pod
	if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: pod}, &lp); err != nil {
		t.Fatal(err)
	}
	var want resource.Quantity
	for _, c := range lp.Spec.Containers {
		want.Add(c.Resources.Requests[corev1.ResourceMemory])
	}
	want.Sub(resource.MustParse("1024M"))
	eventually(t, 30*time.Second, "status.memoryOverhead", func() (bool, error) {
		v, err := getVMI(t, ns, name)
		if err != nil {
			return false, err
		}
		return v.Status.MemoryOverhead != nil && v.Status.MemoryOverhead.Cmp(want) == 0, fmt.Errorf("memoryOverhead %v, want %s", v.Status.MemoryOverhead, want.String())
	})
	t.Logf("status.memoryOverhead %s", want.String())
	// status.volumeStatus: each disk with the guest's device name, in the order of the volumes.
	eventually(t, 30*time.Second, "status.volumeStatus with targets", func() (bool, error) {
		out, err := kubectl(t, "-n", ns, "get", "vmi", name, "-o", `jsonpath={range .status.volumeStatus[*]}{.name}={.target} {end}`)
		return strings.TrimSpace(out) == "containerdisk=vda emptydisk=vdb cloudinitdisk=vdc", fmt.Errorf("volumeStatus %q: %w", out, err)
	})

	// A Service selecting the VMI by kubevirt.io/domain, as the guide's does, reaches the guest.
	mustKubectl(t, "-n", ns, "apply", "-f", "../examples/service-linux.yaml")
	t.Cleanup(func() {
		_, _ = kubectl(t, "-n", ns, "delete", "-f", "../examples/service-linux.yaml", "--ignore-not-found")
	})
	svcIP := strings.TrimSpace(mustKubectl(t, "-n", ns, "get", "svc", "testvmi-http", "-o", "jsonpath={.spec.clusterIP}"))
	// Debian 12's static busybox wget crashes with -T, so timeout(1) bounds each try.
	page := runClientPod(t, ns, "vmi-http-client", "for i in $(seq 1 30); do timeout 5 wget -q -O- http://"+ip+"/ && timeout 5 wget -q -O- http://"+svcIP+":8080/ && exit 0; sleep 2; done; exit 1")
	if strings.Count(page, "slimvirt guest") < 2 {
		t.Fatalf("guest page from another pod, by the VMI's IP and through Service testvmi-http (%s): %q", svcIP, page)
	}
}
