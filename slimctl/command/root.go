// Package command holds slimctl's commands. Each command resolves what it acts on through the
// Kubernetes API with the user's own credentials, honouring kubectl's flags.
package command

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/slimctl/launcherexec"
)

// Version is set at build time with -ldflags "-X .../command.Version=...".
var Version = "dev"

// env is what every command gets: kubectl's flags and the streams.
type env struct {
	flags  *genericclioptions.ConfigFlags
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// clients builds the API clients from kubectl's flags.
func (e *env) clients() (*launcherexec.Client, string, error) {
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
		return nil, "", err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("make slimvirt client: %w", err)
	}
	return &launcherexec.Client{Config: cfg, Kube: kube, Client: c}, ns, nil
}

// Execute runs slimctl with os.Args and returns the exit code.
func Execute(name string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := New(name, stdin, stdout, stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

// New returns the root command.
func New(name string, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	e := &env{flags: genericclioptions.NewConfigFlags(true), stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           name,
		Short:         "Control slimvirt virtual machines",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	e.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(
		versionCmd(e),
		uploadCmd(e),
		vmRequestCmd(e, "start", v1alpha1.AnnotationStartRequested, "Start a stopped VM"),
		vmRequestCmd(e, "stop", v1alpha1.AnnotationStopRequested, "Stop a VM (ACPI shutdown; its run strategy becomes Halted)"),
		vmRequestCmd(e, "restart", v1alpha1.AnnotationRestartRequested, "Restart a VM (its VMI is replaced)"),
		exposeCmd(e),
		consoleCmd(e),
		vncCmd(e),
		powerCmd(e, "pause", "pause", "Pause a running VM (its vCPUs stop; memory is kept)"),
		powerCmd(e, "unpause", "unpause", "Resume a paused VM"),
		powerCmd(e, "soft-reboot", "reboot", "Ask the guest to reboot"),
		guestInfoCmd(e),
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
