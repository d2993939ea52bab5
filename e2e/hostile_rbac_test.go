//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

const (
	rbacNS = "e2e-hostile-rbac"
	// marker is written 1 MiB into the served image; the imported volume must hold it there.
	marker = "SLIMVIRT-RBAC-MARKER"
)

// TestHostileRBACNodeReadsNoTenantSecret asks the API server what the node's and the
// controller's accounts may do with a tenant's Secrets: the node nothing, the controller get
// (to copy an import's credentials) but never list or watch.
func TestHostileRBACNodeReadsNoTenantSecret(t *testing.T) {
	node := "system:serviceaccount:slimvirt:slimvirt-node"
	ctrl := "system:serviceaccount:slimvirt:slimvirt-controller"
	for _, c := range []struct {
		as, verb, resource, ns, want string
	}{
		{node, "get", "secrets", rbacNS, "no"},
		{node, "get", "configmaps", rbacNS, "no"},
		{node, "get", "secrets", "kube-system", "no"},
		{node, "list", "secrets", "slimvirt", "no"},
		{node, "get", "secrets", "slimvirt", "yes"}, // the per-volume import Secrets
		{ctrl, "list", "secrets", rbacNS, "no"},
		{ctrl, "watch", "secrets", rbacNS, "no"},
		{ctrl, "create", "secrets", rbacNS, "no"},
	} {
		out, _ := kubectl(t, "auth", "can-i", "--as", c.as, c.verb, c.resource, "-n", c.ns)
		if got := strings.TrimSpace(out); got != c.want {
			t.Errorf("kubectl auth can-i --as %s %s %s -n %s = %q, want %q", c.as, c.verb, c.resource, c.ns, got, c.want)
		}
	}
}

// TestHostileRBACImportWithCredentials imports, as a tenant with the edit role, an image behind
// basic auth served by a pod of the tenant's namespace: the node reads the credentials from the
// per-volume copy the controller makes, which is gone once the import ends. Without the
// credentials the same import fails: the server does check them.
func TestHostileRBACImportWithCredentials(t *testing.T) {
	tn := newTenant(t, rbacNS, "baseline")
	tn.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: image-creds, namespace: %[1]s}
stringData: {accessKeyId: user, secretKey: pass}
---
apiVersion: v1
kind: Pod
metadata: {name: images, namespace: %[1]s}
spec:
  containers:
    - name: httpd
      image: slimvirt.io/toolbox:dev
      imagePullPolicy: IfNotPresent
      command:
        - /bin/sh
        - -c
        - |
          dd if=/dev/zero of=/www/disk.raw bs=1M count=8 &&
          printf %%s %[2]s | dd of=/www/disk.raw bs=1 seek=1048576 conv=notrunc &&
          echo /:user:pass > /tmp/httpd.conf &&
          exec busybox httpd -f -p 8080 -h /www -c /tmp/httpd.conf
      volumeMounts: [{name: www, mountPath: /www}]
  volumes: [{name: www, emptyDir: {}}]
`, rbacNS, marker))
	ctx := context.Background()
	var ip string
	eventually(t, 2*time.Minute, "image server pod running", func() (bool, error) {
		p := &corev1.Pod{}
		if err := tn.client.Get(ctx, client.ObjectKey{Namespace: rbacNS, Name: "images"}, p); err != nil {
			return false, err
		}
		ip = p.Status.PodIP
		return p.Status.Phase == corev1.PodRunning && ip != "", fmt.Errorf("pod is %s", p.Status.Phase)
	})
	url := fmt.Sprintf("http://%s:8080/disk.raw", ip)
	dv := func(name, secretRef string) string {
		ref := ""
		if secretRef != "" {
			ref = ", secretRef: " + secretRef
		}
		return fmt.Sprintf(`apiVersion: slimvirt.io/v1alpha1
kind: DataVolume
metadata:
  name: %s
  namespace: %s
  annotations: {cdi.kubevirt.io/storage.bind.immediate.requested: "true"}
spec:
  source: {http: {url: %q%s}}
  storage: {resources: {requests: {storage: 64Mi}}}
`, name, rbacNS, url, ref)
	}

	tn.apply(t, dv("without-creds", ""))
	failed := waitTenantDV(t, tn, "without-creds", v1alpha1.DataVolumeFailed, 3*time.Minute)
	if msg := dvMessage(failed); !strings.Contains(msg, "401") {
		t.Fatalf("import without credentials failed with %q, want the server's 401", msg)
	}

	tn.apply(t, dv("with-creds", "image-creds"))
	waitTenantDV(t, tn, "with-creds", v1alpha1.DataVolumeSucceeded, 3*time.Minute)
	out := tenantPod(t, tn, "check", "with-creds", fmt.Sprintf("dd if=/data/disk.img bs=1 skip=1048576 count=%d 2>/dev/null", len(marker)))
	if !strings.Contains(out, marker) {
		t.Fatalf("the imported volume does not hold the served image: read %q", out)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := tn.client.Get(ctx, client.ObjectKey{Namespace: rbacNS, Name: "with-creds"}, pvc); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "per-volume import Secret deleted", func() (bool, error) {
		out, err := kubectl(t, "get", "secrets", "-n", "slimvirt", "-l", "import.slimvirt.io/pvc-uid="+string(pvc.UID), "-o", "name")
		if err != nil {
			return false, fmt.Errorf("%w: %s", err, out)
		}
		return strings.TrimSpace(out) == "", fmt.Errorf("still there: %s", out)
	})
}

func waitTenantDV(t *testing.T, tn *tenant, name string, phase v1alpha1.DataVolumePhase, timeout time.Duration) *v1alpha1.DataVolume {
	t.Helper()
	dv := &v1alpha1.DataVolume{}
	eventually(t, timeout, "DataVolume "+name+" "+string(phase), func() (bool, error) {
		if err := tn.client.Get(context.Background(), client.ObjectKey{Namespace: tn.ns, Name: name}, dv); err != nil {
			return false, err
		}
		if dv.Status.Phase != phase && (dv.Status.Phase == v1alpha1.DataVolumeFailed || dv.Status.Phase == v1alpha1.DataVolumeSucceeded) {
			t.Fatalf("DataVolume %s ended %s, want %s: %+v", name, dv.Status.Phase, phase, dv.Status.Conditions)
		}
		return dv.Status.Phase == phase, fmt.Errorf("phase %q: %+v", dv.Status.Phase, dv.Status.Conditions)
	})
	return dv
}

func dvMessage(dv *v1alpha1.DataVolume) string {
	for _, c := range dv.Status.Conditions {
		if c.Type == v1alpha1.DataVolumeRunning {
			return c.Message
		}
	}
	return ""
}

// tenantPod runs script as the tenant in a pod that mounts claim at /data and returns its log.
func tenantPod(t *testing.T, tn *tenant, name, claim, script string) string {
	t.Helper()
	tn.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  restartPolicy: Never
  containers:
    - name: check
      image: slimvirt.io/toolbox:dev
      imagePullPolicy: IfNotPresent
      command: [/bin/sh, -c, %q]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: %s}}]
`, name, tn.ns, script, claim))
	eventually(t, 2*time.Minute, "pod "+name+" to finish", func() (bool, error) {
		p := &corev1.Pod{}
		if err := tn.client.Get(context.Background(), client.ObjectKey{Namespace: tn.ns, Name: name}, p); err != nil {
			return false, err
		}
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, fmt.Errorf("pod is %s", p.Status.Phase)
	})
	out, err := tn.kubectl("logs", name)
	if err != nil {
		t.Fatalf("logs of %s: %v\n%s", name, err, out)
	}
	return out
}
