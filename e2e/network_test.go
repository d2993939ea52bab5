//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// netVMI is a VMI on the pod network with the given binding whose user-data script reaches a
// peer pod over HTTP and the node with ping, and says so on the serial console.
const netVMI = `apiVersion: slimvirt.io/v1alpha1
kind: VirtualMachineInstance
metadata:
  name: %[1]s
  labels: {e2e-net: %[1]s}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: containerdisk, disk: {bus: virtio}}
      - {name: cloudinit, disk: {bus: virtio}}
      interfaces:
      - name: default
        %[2]s: {}
  networks:
  - {name: default, pod: {}}
  volumes:
  - name: containerdisk
    containerDisk: {image: slimvirt.io/guest:dev, imagePullPolicy: IfNotPresent}
  - name: cloudinit
    cloudInitNoCloud:
      userData: |
        #!/bin/sh
        for i in $(seq 1 20); do
          timeout 5 wget -q -O- http://%[3]s:8080/ 2>/dev/null | grep -q peer-ok && { echo GUEST-REACHED-PEER; break; }
          sleep 2
        done
        for i in $(seq 1 10); do
          ping -c 1 -W 2 %[4]s >/dev/null 2>&1 && { echo GUEST-REACHED-NODE; break; }
          sleep 1
        done
`

// TestNetworkBindings: a bridged and a masqueraded VM reach another pod and the node, and are
// reached from another pod by their IP and through a Service. make e2e runs it on each of the
// local cluster's network styles (bridge, calico-style proxy ARP, VPC-style pinned ARP).
func TestNetworkBindings(t *testing.T) {
	const ns = "default"
	ctx := context.Background()
	nodeIP := readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["NODE_IP"]
	if nodeIP == "" {
		t.Skip("no local cluster env: NODE_IP unknown")
	}
	t.Logf("cluster network style: %s", readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["CLUSTER_NET"])

	peer := &corev1.Pod{}
	peer.Namespace, peer.Name = ns, "net-peer"
	peer.Labels = map[string]string{"e2e-net": "peer"}
	peer.Spec.Containers = []corev1.Container{{
		Name: "web", Image: "slimvirt.io/toolbox:dev", ImagePullPolicy: corev1.PullIfNotPresent,
		Command: []string{"/bin/sh", "-c", "mkdir -p /tmp/w && echo peer-ok > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"},
	}}
	_ = cluster.client.Delete(ctx, peer, client.GracePeriodSeconds(0))
	eventually(t, time.Minute, "old peer gone", func() (bool, error) {
		err := cluster.client.Get(ctx, client.ObjectKeyFromObject(peer), &corev1.Pod{})
		return err != nil && client.IgnoreNotFound(err) == nil, nil
	})
	if err := cluster.client.Create(ctx, peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.client.Delete(context.Background(), peer, client.GracePeriodSeconds(0)) })
	eventually(t, time.Minute, "peer pod IP", func() (bool, error) {
		err := cluster.client.Get(ctx, client.ObjectKeyFromObject(peer), peer)
		return peer.Status.PodIP != "" && peer.Status.Phase == corev1.PodRunning, err
	})

	dir := t.TempDir()
	for _, binding := range []string{"bridge", "masquerade"} {
		name := "net-" + binding
		file := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(file, []byte(fmt.Sprintf(netVMI, name, binding, peer.Status.PodIP, nodeIP)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = kubectl(t, "delete", "-f", file, "--ignore-not-found", "--wait=true")
		_, _ = kubectl(t, "delete", "service", name, "--ignore-not-found")
		mustKubectl(t, "apply", "-f", file)
		t.Cleanup(func() {
			_, _ = kubectl(t, "delete", "-f", file, "--ignore-not-found", "--wait=true", "--timeout=90s")
			_, _ = kubectl(t, "delete", "service", name, "--ignore-not-found")
		})
	}
	for _, binding := range []string{"bridge", "masquerade"} {
		name := "net-" + binding
		t.Run(binding, func(t *testing.T) {
			vmi := waitVMIRunning(t, ns, name, "")
			var logs string
			eventually(t, 4*time.Minute, name+" guest up", func() (bool, error) {
				var err error
				logs, err = kubectl(t, "-n", ns, "logs", vmi.Status.LauncherPod, "-c", "compute")
				return strings.Contains(logs, "SLIMVIRT-GUEST-UP"), err
			})
			for _, want := range []string{"GUEST-REACHED-PEER", "GUEST-REACHED-NODE"} {
				if !strings.Contains(logs, want) {
					t.Errorf("%s: guest did not print %s:\n%s", name, want, lastLines(logs, 30))
				}
			}
			if binding == "bridge" && !strings.Contains(logs, "ip="+vmi.Status.Interfaces[0].IP) {
				t.Errorf("bridged guest did not get the pod IP %s", vmi.Status.Interfaces[0].IP)
			}
			mustSlimctl(t, "expose", "vmi", name, "--name", name, "--port", "8000", "--target-port", "80")
			svc := &corev1.Service{}
			if err := cluster.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
				t.Fatal(err)
			}
			ip := vmi.Status.Interfaces[0].IP
			page := runClientPod(t, ns, name+"-client",
				"for i in $(seq 1 30); do timeout 5 wget -q -O- http://"+ip+"/ && timeout 5 wget -q -O- http://"+svc.Spec.ClusterIP+":8000/ && exit 0; sleep 2; done; exit 1")
			if strings.Count(page, "slimvirt guest "+name) != 2 {
				t.Fatalf("%s not reached by its IP and through its Service: %q", name, page)
			}
		})
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
