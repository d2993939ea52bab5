// Package command holds slimctl's commands. Each command acts with the user's own credentials,
// honouring kubectl's flags: consoles, VNC and power actions through slimvirt's aggregated API
// (subresources.slimvirt.io), the rest through the Kubernetes API.
package command

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/slimctl/subresource"
)

// Version is set at build time with -ldflags "-X .../command.Version=...".
var Version = "dev"

// env is what every command gets: kubectl's flags, the streams and the optional web console.
type env struct {
	flags  *genericclioptions.ConfigFlags
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// webConsole serves a VMI's console and VNC to a browser until ctx ends and returns the
	// page's URL; nil when slimctl is built without it.
	webConsole func(ctx context.Context, cfg webConsoleConfig) (string, error)
	// openURL shows a URL in the user's browser if it can.
	openURL func(ctx context.Context, url string)
}

// clients are the API clients of one command, all with the user's credentials.
type clients struct {
	Config *rest.Config
	Kube   kubernetes.Interface
	Client client.Client
	// Sub reaches subresources.slimvirt.io.
	Sub *subresource.Client
}

// clients builds the API clients from kubectl's flags and returns the namespace to act in.
func (e *env) clients() (*clients, string, error) {
	cfg, err := e.flags.ToRESTConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load kubeconfig: %w", err)
	}
	ns, _, err := e.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("resolve namespace: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("make Kubernetes client: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, "", fmt.Errorf("register Kubernetes types: %w", err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, "", fmt.Errorf("register slimvirt types: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("make slimvirt client: %w", err)
	}
	sub, err := subresource.New(cfg)
	if err != nil {
		return nil, "", err
	}
	return &clients{Config: cfg, Kube: kube, Client: c, Sub: sub}, ns, nil
}

// Execute runs slimctl with os.Args and returns the exit code. Ctrl-C (outside a raw console)
// and SIGTERM end the command's context, so ports and web consoles close cleanly; a second
// Ctrl-C kills slimctl as usual.
func Execute(name string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	root := New(name, stdin, stdout, stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

// New returns the root command.
func New(name string, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	return newRoot(name, &env{stdin: stdin, stdout: stdout, stderr: stderr, openURL: xdgOpen, webConsole: startWebConsole})
}

func newRoot(name string, e *env) *cobra.Command {
	e.flags = genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:   name,
		Short: "Control slimvirt virtual machines",
		Long: `Control slimvirt virtual machines with your own kubeconfig credentials.

Consoles, VNC and power actions go through slimvirt's aggregated API
(subresources.slimvirt.io) on the kube-apiserver, so your RBAC rights on
virtualmachines/* and virtualmachineinstances/* in that group decide what you may do.
A VM's VMI has the VM's name: "vm NAME" and "vmi NAME" name the same running instance.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	e.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(
		versionCmd(e),
		uploadCmd(e),
		vmActionCmd(e, "start", "Start a stopped VM"),
		vmActionCmd(e, "stop", "Stop a VM (ACPI shutdown; its run strategy becomes Halted)"),
		vmActionCmd(e, "restart", "Restart a VM (its VMI is replaced)"),
		migrateCmd(e),
		exposeCmd(e),
		consoleCmd(e),
		vncCmd(e),
		vmiActionCmd(e, "pause", "Pause a running VMI (its vCPUs stop; memory is kept)"),
		vmiActionCmd(e, "unpause", "Resume a paused VMI"),
		vmiActionCmd(e, "soft-reboot", "Ask the guest to reboot (ACPI)"),
		guestOSInfoCmd(e),
	)
	return root
}

func versionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client and server versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(e.stdout, "Client Version: %s\n", Version)
			c, _, err := e.clients()
			if err != nil {
				return err
			}
			v, err := c.Kube.Discovery().ServerVersion()
			if err != nil {
				return fmt.Errorf("get server version: %w", err)
			}
			fmt.Fprintf(e.stdout, "Server Version: %s\n", v.GitVersion)
			return nil
		},
	}
}
