package subresources

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	api "github.com/slimvirt/slimvirt/api/subresources"
	v1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

func TestDiscovery(t *testing.T) {
	// Any authenticated user may read discovery (the system:discovery ClusterRole).
	token := env.user(t, "discovery", "reader")

	code, body := env.do(t, token, http.MethodGet, "/apis/"+api.Group, nil)
	var group metav1.APIGroup
	if code != http.StatusOK || json.Unmarshal(body, &group) != nil || group.Kind != "APIGroup" {
		t.Fatalf("GET /apis/%s: %d %s", api.Group, code, body)
	}
	if group.Name != api.Group || group.PreferredVersion.GroupVersion != api.Group+"/"+api.Version {
		t.Errorf("APIGroup: %+v", group)
	}

	code, body = env.do(t, token, http.MethodGet, "/apis/"+api.Group+"/"+api.Version, nil)
	var list metav1.APIResourceList
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil || list.Kind != "APIResourceList" {
		t.Fatalf("GET /apis/%s/%s: %d %s", api.Group, api.Version, code, body)
	}
	want := map[string]string{
		"virtualmachineinstances/vnc": "get", "virtualmachineinstances/console": "get",
		"virtualmachineinstances/pause": "update", "virtualmachineinstances/guestosinfo": "get",
		"virtualmachines/restart": "update", "virtualmachines/migrate": "update", "datavolumes/uploadtoken": "create",
	}
	for _, r := range list.APIResources {
		if v, ok := want[r.Name]; ok {
			if !r.Namespaced || !slices.Equal(r.Verbs, []string{v}) {
				t.Errorf("%s: namespaced %v verbs %v, want [%s]", r.Name, r.Namespaced, r.Verbs, v)
			}
			delete(want, r.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("APIResourceList lacks %v: %s", want, body)
	}

	// What kubectl api-resources does: aggregated discovery of /apis, then the resources.
	dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{
		Host: env.base, BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{CAData: env.ca},
	})
	testutil.Must(t, err)
	_, resources, err := dc.ServerGroupsAndResources()
	testutil.Must(t, err)
	var found bool
	for _, rl := range resources {
		if rl.GroupVersion != api.Group+"/"+api.Version {
			continue
		}
		for _, r := range rl.APIResources {
			found = found || r.Name == "virtualmachineinstances/vnc" && slices.Equal(r.Verbs, []string{"get"})
		}
	}
	if !found {
		t.Errorf("discovery client finds no virtualmachineinstances/vnc in %v", resources)
	}
}

func TestAnonymousIsUnauthorized(t *testing.T) {
	code, body := env.do(t, "", http.MethodPut, api.APIPath(api.VMIs, "anon", "vm", api.Pause), nil)
	if code != http.StatusForbidden && code != http.StatusUnauthorized {
		t.Fatalf("anonymous pause answered %d: %s", code, body)
	}
}

func TestPauseIsAuthorizedAndProxied(t *testing.T) {
	const ns = "pause"
	env.node(t, "node-a", "127.0.0.1")
	env.vmi(t, ns, "vm1", v1.Running, "node-a")
	allowed := env.user(t, ns, "pauser", allow("update", "virtualmachineinstances/pause"))
	other := env.user(t, ns, "viewer", allow("get", "virtualmachineinstances/vnc"))
	path := api.APIPath(api.VMIs, ns, "vm1", api.Pause)
	nodePath := api.NodePath(ns, "vm1", api.Pause)

	// Without the grant the aggregated server's SubjectAccessReview refuses, before any lookup.
	code, body := env.do(t, other, http.MethodPut, path, nil)
	st := expectStatus(t, http.StatusForbidden, code, body)
	if !strings.Contains(st.Message, "virtualmachineinstances/pause") {
		t.Errorf("403 message: %s", st.Message)
	}
	if n := len(env.agent.requests(nodePath)); n != 0 {
		t.Fatalf("the node agent got %d requests of a refused user", n)
	}

	hostile := http.Header{
		"X-Remote-User": {"system:admin"}, "X-Remote-Group": {"system:masters"},
		"Impersonate-User": {"someone"}, "Cookie": {"a=b"}, "Origin": {"https://evil.example"},
	}
	code, body = env.do(t, allowed, http.MethodPut, path, hostile)
	if code != http.StatusForbidden {
		// Impersonation is authorized too: the pauser may not impersonate.
		t.Fatalf("PUT with Impersonate-User: %d %s", code, body)
	}
	delete(hostile, "Impersonate-User")
	code, body = env.do(t, allowed, http.MethodPut, path, hostile)
	if code != http.StatusOK || string(body) != "PUT "+nodePath+" by "+api.APIClientName {
		t.Fatalf("PUT pause: %d %s", code, body)
	}
	seen := env.agent.requests(nodePath)
	if len(seen) != 1 {
		t.Fatalf("the node agent got %d requests, want 1", len(seen))
	}
	for _, h := range []string{"Authorization", "X-Remote-User", "X-Remote-Group", "Cookie", "Origin"} {
		if v := seen[0].Header.Get(h); v != "" {
			t.Errorf("the node agent was sent %s: %s", h, v)
		}
	}
}

func TestVMINotRunningIsConflict(t *testing.T) {
	const ns = "notrunning"
	env.vmi(t, ns, "sched", v1.Scheduled, "")
	env.vmi(t, ns, "fresh", "", "")
	token := env.user(t, ns, "u", allow("update", "virtualmachineinstances/pause"), allow("get", "virtualmachineinstances/vnc"))

	code, body := env.do(t, token, http.MethodPut, api.APIPath(api.VMIs, ns, "sched", api.Pause), nil)
	st := expectStatus(t, http.StatusConflict, code, body)
	if !strings.Contains(st.Message, "VMI notrunning/sched is not running (phase Scheduled)") {
		t.Errorf("message: %s", st.Message)
	}
	code, body = env.do(t, token, http.MethodGet, api.APIPath(api.VMIs, ns, "fresh", api.VNC), nil)
	expectStatus(t, http.StatusConflict, code, body)

	code, body = env.do(t, token, http.MethodPut, api.APIPath(api.VMIs, ns, "absent", api.Pause), nil)
	st = expectStatus(t, http.StatusNotFound, code, body)
	if st.Details == nil || st.Details.Name != "absent" {
		t.Errorf("404 details: %+v", st.Details)
	}
}

func TestRequestsOutsideTheAPI(t *testing.T) {
	const ns = "shapes"
	env.vmi(t, ns, "vm1", v1.Running, "node-a")
	env.node(t, "node-a", "127.0.0.1")
	token := env.user(t, ns, "u", allow("*", "*"))
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, api.APIPath(api.VMIs, ns, "vm1", api.Pause), http.StatusMethodNotAllowed},
		{http.MethodPost, api.APIPath(api.VMs, ns, "vm1", api.Start), http.StatusMethodNotAllowed},
		{http.MethodGet, api.APIPath(api.DataVolumes, ns, "dv", api.UploadToken), http.StatusMethodNotAllowed},
		{http.MethodPut, api.APIPath(api.VMIs, ns, "vm1", "memorydump"), http.StatusNotFound},
		{http.MethodGet, api.APIPath(api.VMIs, ns, "vm1", api.Freeze), http.StatusMethodNotAllowed},
		{http.MethodPut, api.APIPath("pods", ns, "vm1", api.Pause), http.StatusNotFound},
		{http.MethodGet, api.APIPath(api.VMIs, ns, "vm1", ""), http.StatusNotFound},
		{http.MethodPut, api.APIPath(api.VMIs, ns, "vm1", api.Pause) + "/extra", http.StatusNotFound},
		{http.MethodPut, api.APIPath(api.VMIs, ns, "VM1", api.Pause), http.StatusBadRequest},
		{http.MethodPut, api.APIPath(api.VMIs, ns, "vm1%00", api.Pause), http.StatusBadRequest},
		// Cluster-scoped: authorized at the cluster scope, where the user has no grant.
		{http.MethodPut, "/apis/" + api.Group + "/" + api.Version + "/virtualmachineinstances/vm1/pause", http.StatusForbidden},
		{http.MethodPut, "/apis/" + api.Group + "/v1/namespaces/" + ns + "/virtualmachineinstances/vm1/pause", http.StatusNotFound},
	} {
		code, body := env.do(t, token, tc.method, tc.path, nil)
		if code != tc.code {
			t.Errorf("%s %s: %d, want %d: %s", tc.method, tc.path, code, tc.code, body)
		}
	}
	if n := len(env.agent.requests(api.NodePath(ns, "vm1", api.Pause))); n != 0 {
		t.Errorf("the node agent got %d requests", n)
	}
}

func TestNodeAgentUnreachable(t *testing.T) {
	const ns = "unreachable"
	// Nothing listens on 127.0.0.2 at the agent's port.
	env.node(t, "node-gone", "127.0.0.2")
	env.vmi(t, ns, "vm1", v1.Running, "node-gone")
	env.vmi(t, ns, "vm2", v1.Running, "node-unknown")
	token := env.user(t, ns, "u", allow("get", "virtualmachineinstances/guestosinfo"))

	code, body := env.do(t, token, http.MethodGet, api.APIPath(api.VMIs, ns, "vm1", api.GuestOSInfo), nil)
	st := expectStatus(t, http.StatusServiceUnavailable, code, body)
	if !strings.Contains(st.Message, "node-gone") {
		t.Errorf("message does not name the node: %s", st.Message)
	}
	code, body = env.do(t, token, http.MethodGet, api.APIPath(api.VMIs, ns, "vm2", api.GuestOSInfo), nil)
	st = expectStatus(t, http.StatusServiceUnavailable, code, body)
	if !strings.Contains(st.Message, "node-unknown") {
		t.Errorf("message does not name the node: %s", st.Message)
	}
}

func TestVNCWebsocketPassesThrough(t *testing.T) {
	const ns = "vnc"
	env.node(t, "node-a", "127.0.0.1")
	env.vmi(t, ns, "vm1", v1.Running, "node-a")
	token := env.user(t, ns, "viewer", allow("get", "virtualmachineinstances/vnc"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	url := "wss" + strings.TrimPrefix(env.base, "https") + api.APIPath(api.VMIs, ns, "vm1", api.VNC)
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient:   env.http,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{api.PlainProtocol},
	})
	if err != nil {
		t.Fatalf("dial vnc: %v (%v)", err, resp)
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(1 << 20)
	if c.Subprotocol() != api.PlainProtocol {
		t.Errorf("subprotocol %q", c.Subprotocol())
	}
	// Longer than nothing: the stream is a long-running request, not cut at a request timeout.
	for _, msg := range []string{"RFB 003.008\n", strings.Repeat("x", 100000)} {
		testutil.Must(t, c.Write(ctx, websocket.MessageBinary, []byte(msg)))
		typ, data, err := c.Read(ctx)
		testutil.Must(t, err)
		if typ != websocket.MessageBinary || string(data) != "echo:"+msg {
			t.Fatalf("echo: %v %.40q", typ, data)
		}
	}
	testutil.Must(t, c.Close(websocket.StatusNormalClosure, ""))
	seen := env.agent.requests(api.NodePath(ns, "vm1", api.VNC))
	if len(seen) != 1 || seen[0].Header.Get("Authorization") != "" {
		t.Fatalf("node agent requests: %d", len(seen))
	}
}

// TestFrontProxy is the path every request takes in a cluster: the kube-apiserver's aggregator
// presents its proxy client certificate and names the user in X-Remote-* headers; the server
// believes those headers only from that certificate, and authorizes the user it names.
func TestFrontProxy(t *testing.T) {
	const ns = "frontproxy"
	env.node(t, "node-a", "127.0.0.1")
	env.vmi(t, ns, "vm1", v1.Running, "node-a")
	ctx := context.Background()
	testutil.Must(t, env.c.Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pause"},
		Rules:      []rbacv1.PolicyRule{allow("update", "virtualmachineinstances/pause")},
	}))
	testutil.Must(t, env.c.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pause"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "alice"}},
	}))
	path := api.APIPath(api.VMIs, ns, "vm1", api.Pause)
	put := func(c *http.Client, user string) (int, []byte) {
		req, err := http.NewRequest(http.MethodPut, env.base+path, nil)
		testutil.Must(t, err)
		req.Header.Set("X-Remote-User", user)
		req.Header.Set("X-Remote-Group", "system:authenticated")
		resp, err := c.Do(req)
		testutil.Must(t, err)
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		testutil.Must(t, err)
		return resp.StatusCode, body
	}
	proxy := env.frontProxy(env.pki.proxy)

	code, body := put(proxy, "alice")
	if code != http.StatusOK || !strings.HasPrefix(string(body), "PUT ") {
		t.Fatalf("alice through the front proxy: %d %s", code, body)
	}
	code, body = put(proxy, "bob")
	if st := expectStatus(t, http.StatusForbidden, code, body); !strings.Contains(st.Message, `"bob"`) {
		t.Errorf("bob: %s", st.Message)
	}
	// The headers count for nothing without the proxy's certificate: not from a client without
	// one, nor from one whose certificate the CA signed for another name.
	code, body = put(env.http, "alice")
	expectStatus(t, http.StatusForbidden, code, body)
	code, body = put(env.frontProxy(env.pki.cli), "alice")
	if code == http.StatusOK {
		t.Fatalf("a certificate not named %s passed as the front proxy: %s", frontProxyName, body)
	}
	if n := len(env.agent.requests(api.NodePath(ns, "vm1", api.Pause))); n != 1 {
		t.Errorf("the node agent got %d requests, want 1", n)
	}
}
