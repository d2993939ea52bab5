package subresource_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
	"github.com/slimvirt/slimvirt/slimctl/subresource"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Start("slimctl-subresource")
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

var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// registerAPI makes (or replaces) the APIService of subresources.slimvirt.io, pointing at the
// Service slimvirt/slimvirt-subresources on port.
func registerAPI(t *testing.T, port int) {
	t.Helper()
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(env.Config)
	testutil.Must(t, err)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": subresources.APIServiceName},
		"spec": map[string]any{
			"group": subresources.Group, "version": subresources.Version,
			"groupPriorityMinimum": int64(1000), "versionPriority": int64(15),
			"insecureSkipTLSVerify": true,
			"service":               map[string]any{"namespace": "slimvirt", "name": subresources.ServiceName, "port": int64(port)},
		},
	}}
	err = dyn.Resource(apiServices).Delete(ctx, subresources.APIServiceName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	_, err = dyn.Resource(apiServices).Create(ctx, obj, metav1.CreateOptions{})
	testutil.Must(t, err)
}

// userConfig is a kubeconfig of the service account ns/name: a bearer token, no certificate.
func userConfig(t *testing.T, ns, name string) *rest.Config {
	t.Helper()
	token, err := env.Token(context.Background(), ns, name)
	testutil.Must(t, err)
	return &rest.Config{Host: env.Config.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}}
}

// grant lets the service account ns/name use verbs on the given subresources in its namespace.
func grant(t *testing.T, ns, name string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	_, err := env.Clientset.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = env.Clientset.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: name}}}, metav1.CreateOptions{})
	testutil.Must(t, err)
}

func newClient(t *testing.T, cfg *rest.Config) *subresource.Client {
	t.Helper()
	c, err := subresource.New(cfg)
	testutil.Must(t, err)
	return c
}

// calls are the three ways to reach a subresource, each with the verb RBAC checks.
var calls = []struct {
	sub, verb string
	call      func(context.Context, *subresource.Client, string, string) error
}{
	{subresources.Pause, "update", func(ctx context.Context, c *subresource.Client, ns, name string) error {
		return c.Put(ctx, subresources.VMIs, ns, name, subresources.Pause)
	}},
	{subresources.GuestOSInfo, "get", func(ctx context.Context, c *subresource.Client, ns, name string) error {
		_, err := c.Get(ctx, subresources.VMIs, ns, name, subresources.GuestOSInfo)
		return err
	}},
	{subresources.Console, "get", func(ctx context.Context, c *subresource.Client, ns, name string) error {
		s, err := c.Dial(ctx, subresources.VMIs, ns, name, subresources.Console)
		if err == nil {
			_ = s.Close()
		}
		return err
	}},
}

// TestUnregisteredGroupIsNamed: without slimvirt's APIService the kube-apiserver answers 404;
// the error names the call and says the aggregated API is missing.
func TestUnregisteredGroupIsNamed(t *testing.T) {
	c := newClient(t, env.Config)
	for _, tc := range calls {
		t.Run(tc.sub, func(t *testing.T) {
			err := tc.call(context.Background(), c, "ns-a", "x")
			if !apierrors.IsNotFound(err) {
				t.Fatalf("got %v, want a NotFound status", err)
			}
			t.Log(err)
			want := fmt.Sprintf("%s VMI ns-a/x: not found: the cluster does not serve %s", tc.sub, subresources.Group)
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "kubectl get apiservice "+subresources.APIServiceName) {
				t.Errorf("got %q, want it to start with %q and name the APIService", err, want)
			}
		})
	}
}

// TestRegisteredAPI registers the group with the aggregator. The kube-apiserver authorizes
// before it proxies: a user without a Role is refused by it (403, with the verb and the
// subresource); one with a Role reaches the (absent, then present) aggregated server.
func TestRegisteredAPI(t *testing.T) {
	ctx := context.Background()
	testutil.Must(t, env.Namespace(ctx, "slimvirt"))
	backend := startBackend(t)
	port := backend.Listener.Addr().(*net.TCPAddr).Port
	registerAPI(t, port)
	t.Cleanup(func() {
		dyn, err := dynamic.NewForConfig(env.Config)
		testutil.Must(t, err)
		testutil.Must(t, dyn.Resource(apiServices).Delete(ctx, subresources.APIServiceName, metav1.DeleteOptions{}))
	})
	bob := newClient(t, userConfig(t, "ns-r", "bob"))
	alice := newClient(t, userConfig(t, "ns-r", "alice"))
	grant(t, "ns-r", "alice", rbacv1.PolicyRule{APIGroups: []string{subresources.Group},
		Resources: []string{"virtualmachineinstances/pause", "virtualmachineinstances/unpause", "virtualmachineinstances/console", "virtualmachineinstances/guestosinfo"},
		Verbs:     []string{"get", "update"}})

	t.Run("forbidden", func(t *testing.T) {
		for _, tc := range calls {
			err := tc.call(ctx, bob, "ns-r", "x")
			if !apierrors.IsForbidden(err) {
				t.Fatalf("%s: got %v, want a Forbidden status", tc.sub, err)
			}
			t.Log(err)
			want := fmt.Sprintf(`%s VMI ns-r/x: forbidden: User "system:serviceaccount:ns-r:bob" cannot %s resource "virtualmachineinstances/%s" in API group %q in the namespace "ns-r"`,
				tc.sub, tc.verb, tc.sub, subresources.Group)
			if err.Error() != want {
				t.Errorf("got  %q\nwant %q", err, want)
			}
		}
	})

	t.Run("unavailable", func(t *testing.T) {
		// The APIService points at a Service that does not exist yet.
		for _, tc := range calls {
			err := tc.call(ctx, alice, "ns-r", "x")
			var se *subresource.Error
			if !errors.As(err, &se) || se.ServerStatus.Code != http.StatusServiceUnavailable {
				t.Fatalf("%s: got %v, want a 503", tc.sub, err)
			}
			t.Log(err)
			want := fmt.Sprintf("%s VMI ns-r/x: service unavailable: slimvirt's aggregated API %s does not answer", tc.sub, subresources.Group)
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got %q, want it to start with %q", err, want)
			}
		}
	})

	t.Run("through the aggregator", func(t *testing.T) {
		// An ExternalName Service leads the aggregator to the test's server on loopback.
		_, err := env.Clientset.CoreV1().Services("slimvirt").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: subresources.ServiceName},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "127.0.0.1"},
		}, metav1.CreateOptions{})
		testutil.Must(t, err)
		testutil.WaitFor(t, time.Minute, "aggregated API available", func() bool {
			return alice.Put(ctx, subresources.VMIs, "ns-r", "x", subresources.Pause) == nil
		})
		checkStreams(t, alice, backend.Config.Handler.(*fakeServer))
	})
}

func checkStreams(t *testing.T, alice *subresource.Client, srv *fakeServer) {
	ctx := context.Background()
	if got := srv.puts(); !strings.HasSuffix(got[len(got)-1], "/namespaces/ns-r/virtualmachineinstances/x/pause") {
		t.Errorf("server saw PUTs %q", got)
	}
	info, err := alice.Get(ctx, subresources.VMIs, "ns-r", "x", subresources.GuestOSInfo)
	testutil.Must(t, err)
	if string(info) != `{"hostname":"x"}` {
		t.Errorf("guestosinfo: got %q", info)
	}
	// The aggregated server's own refusal reaches the user as it said it.
	err = alice.Put(ctx, subresources.VMIs, "ns-r", "x", subresources.Unpause)
	if !apierrors.IsForbidden(err) || !strings.HasSuffix(err.Error(), "forbidden: the aggregated server says no") {
		t.Fatalf("unpause refused by the aggregated server: got %v", err)
	}
	s, err := alice.Dial(ctx, subresources.VMIs, "ns-r", "x", subresources.Console)
	testutil.Must(t, err)
	defer s.Close()
	greeting := make([]byte, len("login: "))
	_, err = io.ReadFull(s, greeting)
	testutil.Must(t, err)
	if string(greeting) != "login: " {
		t.Errorf("greeting: got %q", greeting)
	}
	// A megabyte each way, in odd-sized writes, comes back whole and in order.
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() {
		for b := payload; len(b) > 0; {
			n := min(len(b), 3001)
			if _, err := s.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
	}()
	echo := make([]byte, len(payload))
	_, err = io.ReadFull(s, echo)
	testutil.Must(t, err)
	if !bytes.Equal(echo, payload) {
		t.Error("the echo differs from what was sent")
	}
	testutil.Must(t, s.Close())
}

// fakeServer stands in for the aggregated server behind the kube-apiserver: discovery, a PUT,
// a GET and an echoing console websocket.
type fakeServer struct {
	mu  sync.Mutex
	put []string
}

func (f *fakeServer) puts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.put...)
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gv := "/apis/" + subresources.Group + "/" + subresources.Version
	switch {
	case r.URL.Path == gv:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: subresources.Group + "/" + subresources.Version})
	case r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/"+subresources.Pause):
		f.mu.Lock()
		f.put = append(f.put, r.URL.Path)
		f.mu.Unlock()
	case r.Method == http.MethodPut:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
			Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: "the aggregated server says no"})
	case strings.HasSuffix(r.URL.Path, "/"+subresources.GuestOSInfo):
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"hostname":"x"}`))
	case strings.HasSuffix(r.URL.Path, "/"+subresources.Console):
		echo(w, r)
	default:
		http.NotFound(w, r)
	}
}

// echo greets and then sends back every binary message.
func echo(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{subresources.PlainProtocol}}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	if ws.WriteMessage(websocket.BinaryMessage, []byte("login: ")) != nil {
		return
	}
	for {
		typ, b, err := ws.ReadMessage()
		if err != nil || ws.WriteMessage(typ, b) != nil {
			return
		}
	}
}

func startBackend(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(&fakeServer{})
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}
