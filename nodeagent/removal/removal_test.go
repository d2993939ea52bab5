package removal

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slimvirt/slimvirt/internal/testenv"
)

// TestDaemonSetGone runs against a real API server: a DaemonSet that exists is not gone, one
// with a finalizer being deleted is, and a deleted one is.
func TestDaemonSetGone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the API server harness runs as root")
	}
	env, err := testenv.Start("removal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	cs := env.Clientset
	if err := env.Namespace(ctx, "slimvirt"); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "node"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "slimvirt-node", Namespace: "slimvirt", Finalizers: []string{"slimvirt.io/test"}},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "node", Image: "slimvirt.io/node:dev"}}},
			},
		},
	}
	if _, err := cs.AppsV1().DaemonSets("slimvirt").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(want bool, when string) {
		t.Helper()
		got, err := DaemonSetGone(ctx, cs, "slimvirt", "slimvirt-node")
		if err != nil || got != want {
			t.Fatalf("%s: gone = %v (%v), want %v", when, got, err, want)
		}
	}
	check(false, "while the DaemonSet exists")
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w := Watch(wctx, cs, "slimvirt", "slimvirt-node", slog.New(slog.NewTextHandler(os.Stderr, nil)))
	time.Sleep(500 * time.Millisecond)
	if w.Gone() {
		t.Fatal("the watcher says gone while the DaemonSet exists")
	}
	if err := cs.AppsV1().DaemonSets("slimvirt").Delete(ctx, "slimvirt-node", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	check(true, "while it is being deleted")
	deadline := time.Now().Add(10 * time.Second)
	for !w.Gone() {
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not see the deletion")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cur, err := cs.AppsV1().DaemonSets("slimvirt").Get(ctx, "slimvirt-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Finalizers = nil
	if _, err := cs.AppsV1().DaemonSets("slimvirt").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check(true, "once it is deleted")
	if _, err := DaemonSetGone(ctx, cs, "other", "x"); err != nil {
		t.Fatalf("a missing namespace is a missing DaemonSet: %v", err)
	}
}
