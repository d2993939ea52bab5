package command

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/slimvirt/slimvirt/api/subresources"
	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
)

// vmActionCmd PUTs a VM subresource (start, stop, restart); the controller applies KubeVirt's
// run-strategy semantics (see docs/api.md).
func vmActionCmd(e *env, verb, short string) *cobra.Command {
	var grace int64
	var force bool
	cmd := &cobra.Command{
		Use:   verb + " VM",
		Short: short,
		Long: fmt.Sprintf("%s.\n\nNeeds the verb update on virtualmachines/%s in the API group %s.\n"+
			"The annotation slimvirt.io/%s-requested (kubectl annotate, GitOps) asks for the same without it.",
			short, verb, subresources.Group, verb),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if force && grace < 0 {
				return fmt.Errorf("--force needs --grace-period")
			}
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := c.Sub.Put(ctx, subresources.VMs, ns, args[0], verb); err != nil {
				return err
			}
			if force {
				if err := deleteLauncherPod(ctx, c.Client, ns, args[0], grace); err != nil {
					return err
				}
			}
			fmt.Fprintf(e.stdout, "VM %s was scheduled to %s\n", args[0], verb)
			return nil
		},
	}
	if verb == subresources.Stop || verb == subresources.Restart {
		cmd.Long += "\nWith --force it also deletes the running VMI's pod with --grace-period, which needs\n" +
			"get on virtualmachineinstances (slimvirt.io) and delete on pods."
		cmd.Flags().Int64Var(&grace, "grace-period", -1, "seconds the guest gets to shut down, with --force (0: at once)")
		cmd.Flags().BoolVar(&force, "force", false, "end the running VMI's pod with --grace-period instead of waiting for the guest")
	}
	return cmd
}

// migrateCmd asks for a live migration of a VM's VMI and reports the server's answer.
func migrateCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate VM",
		Short: "Live-migrate a VM's VMI to another node (if the cluster offers it)",
		Long: "Live-migrate a VM's VMI to another node. slimvirt answers whether it can; the answer is printed.\n\n" +
			"Needs the verb update on virtualmachines/migrate in the API group " + subresources.Group + ".",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			if err := c.Sub.Put(cmd.Context(), subresources.VMs, ns, args[0], subresources.Migrate); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "VM %s was scheduled to migrate\n", args[0])
			return nil
		},
	}
}

// deleteLauncherPod ends a VM's running VMI now, for stop/restart --force.
func deleteLauncherPod(ctx context.Context, c client.Client, ns, vm string, grace int64) error {
	vmi := &v1alpha1.VirtualMachineInstance{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: vm}, vmi); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("get VMI %s/%s: %w", ns, vm, err)
		}
		return nil
	}
	if vmi.Status.LauncherPod == "" {
		return nil
	}
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = ns, vmi.Status.LauncherPod
	if err := c.Delete(ctx, pod, client.GracePeriodSeconds(grace)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete launcher pod %s/%s: %w", ns, pod.Name, err)
	}
	return nil
}
