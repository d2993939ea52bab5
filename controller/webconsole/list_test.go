package webconsole_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/slimvirt/slimvirt/controller/webconsole"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// call GETs a path of the console with headers and decodes the JSON answer into out.
func call(t *testing.T, url string, header map[string]string, out any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	testutil.Must(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	testutil.Must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	testutil.Must(t, err)
	if resp.Header.Get("Content-Type") == "application/json" {
		testutil.Must(t, json.Unmarshal(b, out))
	}
	return resp.StatusCode
}

type apiError struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
}

// TestListVMIs: the list is the kube-apiserver's answer to the user's own token. A service
// account with a Role that lists VMIs sees them with their phases; one without reads the
// kube-apiserver's "forbidden"; no token is 401, a token the cluster does not know is 401 too,
// and no token ever reaches the log.
func TestListVMIs(t *testing.T) {
	base, logs := startConsole(t)
	alice, bob := token(t, "ns-list", "alice"), token(t, "ns-list", "bob")
	grant(t, "ns-list", "alice", "slimvirt.io", []string{"virtualmachineinstances"}, []string{"get", "list"})
	createVMI(t, "ns-list", "vm-a", "Running")
	createVMI(t, "ns-list", "vm-b", "")
	url := base + "/api/namespaces/ns-list/virtualmachineinstances"

	var list webconsole.VMIList
	if code := call(t, url, map[string]string{"Authorization": "Bearer " + alice}, &list); code != http.StatusOK {
		t.Fatalf("alice: %d", code)
	}
	want := []webconsole.VMI{{Name: "vm-a", Phase: "Running"}, {Name: "vm-b", Phase: "Pending"}}
	if list.Namespace != "ns-list" || len(list.Items) != 2 || list.Items[0] != want[0] || list.Items[1] != want[1] {
		t.Errorf("alice sees %+v, want %+v", list, want)
	}

	var e apiError
	code := call(t, url, map[string]string{"Authorization": "Bearer " + bob}, &e)
	wantMsg := `User "system:serviceaccount:ns-list:bob" cannot list resource "virtualmachineinstances" in API group "slimvirt.io" in the namespace "ns-list"`
	if code != http.StatusForbidden || e.Code != http.StatusForbidden || !strings.Contains(e.Error, "forbidden") || !strings.Contains(e.Error, wantMsg) {
		t.Errorf("bob: %d %+v, want 403 with %q", code, e, wantMsg)
	}
	t.Log("bob reads:", e.Error)

	for name, hdr := range map[string]map[string]string{
		"no token":      nil,
		"unknown token": {"Authorization": "Bearer not-a-token-the-cluster-knows"},
		"basic auth":    {"Authorization": "Basic YWRtaW46YWRtaW4="},
		"oversized":     {"Authorization": "Bearer " + strings.Repeat("a", webconsole.MaxTokenBytes+1)},
		"not ASCII":     {"Authorization": "Bearer abc\xffdef"},
	} {
		e = apiError{}
		if code := call(t, url, hdr, &e); code != http.StatusUnauthorized || e.Error == "" {
			t.Errorf("%s: %d %+v, want 401 with a message", name, code, e)
		}
	}
	for _, path := range []string{"/api/namespaces/NS_bad/virtualmachineinstances", "/api/namespaces/" + strings.Repeat("a", 64) + "/virtualmachineinstances"} {
		if code := call(t, base+path, map[string]string{"Authorization": "Bearer " + alice}, &e); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", path, code)
		}
	}
	if code := call(t, url, map[string]string{"Authorization": "Bearer " + alice, "Origin": "https://evil.example"}, &e); code != http.StatusForbidden {
		t.Errorf("another origin: %d, want 403", code)
	}
	noTokens(t, logs.String(), alice, bob)
}

// noTokens fails when any token, or any long piece of one, is in the log.
func noTokens(t *testing.T, log string, tokens ...string) {
	t.Helper()
	if log == "" {
		t.Fatal("the server logged nothing")
	}
	for _, tok := range tokens {
		for i := 0; i+24 <= len(tok); i += 24 {
			if strings.Contains(log, tok[i:i+24]) {
				t.Fatalf("a token is in the log:\n%s", log)
			}
		}
	}
}
