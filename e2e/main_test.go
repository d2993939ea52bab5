//go:build e2e

// Package e2e runs the user guide's steps against a real cluster with slimvirt installed
// (the local cluster by default: make e2e).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// env is what every test needs to reach the cluster.
type env struct {
	kubeconfig string
	kubectl    string
	client     client.Client
	config     *rest.Config
}

var cluster env

func TestMain(m *testing.M) {
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		kc = readClusterEnv("/var/lib/slimvirt-cluster/cluster.env")["KUBECONFIG"]
	}
	if kc == "" {
		fmt.Fprintln(os.Stderr, "e2e: no KUBECONFIG and no local cluster (run: make cluster-up)")
		os.Exit(1)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: load kubeconfig:", err)
		os.Exit(1)
	}
	// Polls from many goroutines (the start-latency bench waits on ten VMIs) must not queue
	// behind client-go's default 5 requests per second.
	cfg.QPS, cfg.Burst = 100, 200
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToSchemeOrDie(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: client:", err)
		os.Exit(1)
	}
	kubectl := "kubectl"
	if dir := os.Getenv("SLIMVIRT_CACHE"); dir != "" {
		if p := filepath.Join(dir, "k8s", os.Getenv("K8S_VERSION"), "bin", "kubectl"); fileExists(p) {
			kubectl = p
		}
	}
	cluster = env{kubeconfig: kc, kubectl: kubectl, client: c, config: cfg}
	os.Exit(m.Run())
}

func readClusterEnv(path string) map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && !strings.HasPrefix(k, "#") {
			out[k] = strings.Trim(v, `"'`)
		}
	}
	return out
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// kubectl runs kubectl against the cluster and returns its combined output.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(cluster.kubectl, append([]string{"--kubeconfig", cluster.kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustKubectl fails the test when kubectl fails.
func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// eventually polls cond every interval until it returns true or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// getVMI reads a VMI.
func getVMI(t *testing.T, ns, name string) (*v1alpha1.VirtualMachineInstance, error) {
	t.Helper()
	vmi := &v1alpha1.VirtualMachineInstance{}
	err := cluster.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, vmi)
	return vmi, err
}

// runClientPod runs a toolbox pod with a shell command to completion and returns its logs.
func runClientPod(t *testing.T, ns, name, script string) string {
	t.Helper()
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = ns, name
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Containers = []corev1.Container{{
		Name: "client", Image: "slimvirt.io/toolbox:dev", ImagePullPolicy: corev1.PullIfNotPresent,
		Command: []string{"/bin/sh", "-c", script},
	}}
	ctx := context.Background()
	_ = cluster.client.Delete(ctx, pod)
	eventually(t, 30*time.Second, "old client pod gone", func() (bool, error) {
		err := cluster.client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return client.IgnoreNotFound(err) == nil && err != nil, err
	})
	if err := cluster.client.Create(ctx, pod); err != nil {
		t.Fatalf("create client pod: %v", err)
	}
	t.Cleanup(func() { _ = cluster.client.Delete(context.Background(), pod) })
	eventually(t, 2*time.Minute, "client pod "+name+" to finish", func() (bool, error) {
		p := &corev1.Pod{}
		if err := cluster.client.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
			return false, err
		}
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
	})
	return mustKubectl(t, "-n", ns, "logs", name)
}
