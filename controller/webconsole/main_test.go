package webconsole_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/slimvirt/slimvirt/controller/webconsole"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Start("controller-webconsole")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// logBuffer collects a server's log lines, to look for tokens in them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startConsole runs a console server on a free loopback port with the kube-apiserver's address
// and CA, and the admin's credentials too: the server must not use them.
func startConsole(t *testing.T) (base string, logs *logBuffer) {
	t.Helper()
	logs = &logBuffer{}
	s, err := webconsole.New(webconsole.Config{APIServer: env.Config, Addr: "127.0.0.1:0",
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	testutil.Must(t, err)
	if s.NeedLeaderElection() {
		t.Error("the console needs leader election")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	testutil.Must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), logs
}

// grant lets the service account ns/name use verbs on resources of a group in its namespace.
func grant(t *testing.T, ns, name, group string, resources, verbs []string) {
	t.Helper()
	ctx := context.Background()
	_, err := env.Clientset.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{group}, Resources: resources, Verbs: verbs}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = env.Clientset.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: name}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
}

func token(t *testing.T, ns, name string) string {
	t.Helper()
	tok, err := env.Token(context.Background(), ns, name)
	testutil.Must(t, err)
	return tok
}

var vmis = schema.GroupVersionResource{Group: "slimvirt.io", Version: "v1alpha1", Resource: "virtualmachineinstances"}

// createVMI makes a VMI as the admin and sets its phase.
func createVMI(t *testing.T, ns, name, phase string) {
	t.Helper()
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(env.Config)
	testutil.Must(t, err)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "slimvirt.io/v1alpha1", "kind": "VirtualMachineInstance",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{"domain": map[string]any{"devices": map[string]any{},
			"memory": map[string]any{"guest": "64Mi"}}},
	}}
	obj, err = dyn.Resource(vmis).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
	testutil.Must(t, err)
	if phase == "" {
		return
	}
	testutil.Must(t, unstructured.SetNestedField(obj.Object, phase, "status", "phase"))
	_, err = dyn.Resource(vmis).Namespace(ns).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	testutil.Must(t, err)
}
