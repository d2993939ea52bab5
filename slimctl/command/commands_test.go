package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/slimvirt/slimvirt/api/subresources"
	"github.com/slimvirt/slimvirt/internal/testenv"
	"github.com/slimvirt/slimvirt/internal/testutil"
)

// commandRights is what each command asks of RBAC in subresources.slimvirt.io: the rules the
// chart's roles must grant (docs/slimctl.md has the same table).
var commandRights = []struct {
	args           []string
	verb, resource string
}{
	{[]string{"console", "x"}, "get", "virtualmachineinstances/console"},
	{[]string{"vnc", "x", "--proxy-only"}, "get", "virtualmachineinstances/vnc"},
	{[]string{"pause", "vm", "x"}, "update", "virtualmachineinstances/pause"},
	{[]string{"unpause", "vmi", "x"}, "update", "virtualmachineinstances/unpause"},
	{[]string{"soft-reboot", "vmi", "x"}, "update", "virtualmachineinstances/softreboot"},
	{[]string{"guestosinfo", "vmi", "x"}, "get", "virtualmachineinstances/guestosinfo"},
	{[]string{"guestinfo", "vm", "x"}, "get", "virtualmachineinstances/guestosinfo"},
	{[]string{"start", "x"}, "update", "virtualmachines/start"},
	{[]string{"stop", "x"}, "update", "virtualmachines/stop"},
	{[]string{"restart", "x"}, "update", "virtualmachines/restart"},
	{[]string{"migrate", "x"}, "update", "virtualmachines/migrate"},
}

// TestCommandsAskRBAC runs every command against a real kube-apiserver as a user without
// rights (each is refused by the kube-apiserver, naming the verb and subresource it needs) and
// as one with exactly the rules above (each passes RBAC and learns that the aggregated API is
// not registered here).
func TestCommandsAskRBAC(t *testing.T) {
	env, err := testenv.Start("slimctl-command")
	testutil.Must(t, err)
	t.Cleanup(func() { testutil.Must(t, env.Stop()) })
	ctx := context.Background()
	bob := userKubeconfig(t, env, "ns-c", "bob")
	alice := userKubeconfig(t, env, "ns-c", "alice")
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "vm-user"}}
	for _, r := range commandRights {
		role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{subresources.Group}, Resources: []string{r.resource}, Verbs: []string{r.verb}})
	}
	_, err = env.Clientset.RbacV1().Roles("ns-c").Create(ctx, role, metav1.CreateOptions{})
	testutil.Must(t, err)
	_, err = env.Clientset.RbacV1().RoleBindings("ns-c").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "vm-user"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "ns-c", Name: "alice"}}}, metav1.CreateOptions{})
	testutil.Must(t, err)

	for _, r := range commandRights {
		t.Run(strings.Join(r.args, " "), func(t *testing.T) {
			_, err := run(ctx, &env0{}, append(r.args, "--kubeconfig", bob)...)
			want := fmt.Sprintf(`forbidden: User "system:serviceaccount:ns-c:bob" cannot %s resource %q in API group %q in the namespace "ns-c"`,
				r.verb, r.resource, subresources.Group)
			if err == nil || !strings.HasSuffix(err.Error(), want) {
				t.Errorf("bob: got %v, want it to end with %q", err, want)
			}
			_, err = run(ctx, &env0{}, append(r.args, "--kubeconfig", alice)...)
			if err == nil || !strings.Contains(err.Error(), "not found: the cluster does not serve "+subresources.Group) {
				t.Errorf("alice: got %v, want the unregistered group's 404", err)
			}
		})
	}

	t.Run("web console", func(t *testing.T) { testWebConsole(t, bob) })
}

// testWebConsole: --web hands the web console the VMI and a dialer of its two streams, prints
// the URL and opens it; without a web console it says so.
func testWebConsole(t *testing.T, kubeconfig string) {
	_, err := run(context.Background(), &env0{}, "console", "x", "--web", "--kubeconfig", kubeconfig)
	if !errors.Is(err, errNoWebConsole) {
		t.Errorf("without a web console: got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got webConsoleConfig
	var opened string
	e := &env0{
		webConsole: func(_ context.Context, cfg webConsoleConfig) (string, error) {
			got = cfg
			return "http://127.0.0.1:1234/#secret", nil
		},
		openURL: func(_ context.Context, url string) { opened = url; cancel() },
	}
	out, err := run(ctx, e, "vnc", "x", "--web", "--port", "1234", "--kubeconfig", kubeconfig)
	testutil.Must(t, err)
	if got.Namespace != "ns-c" || got.VMI != "x" || got.Addr != "127.0.0.1:1234" || got.Log == nil {
		t.Errorf("web console config %+v", got)
	}
	if !strings.Contains(out, "http://127.0.0.1:1234/#secret") || opened != "http://127.0.0.1:1234/#secret" {
		t.Errorf("printed %q, opened %q", out, opened)
	}
	if _, err := got.Dial(context.Background(), "exec"); err == nil {
		t.Error("the dialer opened something other than console or vnc")
	}
	// bob may not: the refusal of the kube-apiserver reaches the web console's dialer.
	if _, err := got.Dial(context.Background(), subresources.VNC); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("vnc as bob: got %v", err)
	}
}

// env0 is the part of env a test sets; run fills in the rest.
type env0 struct {
	webConsole func(context.Context, webConsoleConfig) (string, error)
	openURL    func(context.Context, string)
}

// run runs slimctl with args and returns what it printed.
func run(ctx context.Context, e0 *env0, args ...string) (string, error) {
	var out bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: io.Discard, webConsole: e0.webConsole, openURL: e0.openURL}
	root := newRoot("slimctl", e)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// userKubeconfig writes a kubeconfig of the service account ns/name (a bearer token) whose
// context's namespace is ns.
func userKubeconfig(t *testing.T, env *testenv.Env, ns, name string) string {
	t.Helper()
	token, err := env.Token(context.Background(), ns, name)
	testutil.Must(t, err)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["env"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["env"] = &clientcmdapi.Context{Cluster: "env", AuthInfo: name, Namespace: ns}
	kc.CurrentContext = "env"
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	testutil.Must(t, clientcmd.WriteToFile(*kc, path))
	return path
}
