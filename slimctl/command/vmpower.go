package command

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/slimctl/launcherexec"
)

// vmRequestCmd asks the controller to start, stop or restart a VM by annotating it (see
// docs/api.md); the controller applies KubeVirt's run-strategy semantics.
func vmRequestCmd(e *env, verb, annotation, short string) *cobra.Command {
	var grace int64
	var force bool
	cmd := &cobra.Command{
		Use:   verb + " VM",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if force && grace < 0 {
				return fmt.Errorf("--force needs --grace-period")
			}
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := annotateVM(ctx, c.Client, ns, args[0], annotation); err != nil {
				return err
			}
			if force {
				if err := deleteLauncherPod(ctx, c, ns, args[0], grace); err != nil {
					return err
				}
			}
			fmt.Fprintf(e.stdout, "VM %s was scheduled to %s\n", args[0], verb)
			return nil
		},
	}
	if verb == "stop" || verb == "restart" {
		cmd.Flags().Int64Var(&grace, "grace-period", -1, "seconds the guest gets to shut down, with --force (0: at once)")
		cmd.Flags().BoolVar(&force, "force", false, "end the running VMI's pod with --grace-period instead of waiting for the guest")
	}
	return cmd
}

func annotateVM(ctx context.Context, c client.Client, ns, name, annotation string) error {
	vm := &v1alpha1.VirtualMachine{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("VM %s not found in namespace %s", name, ns)
		}
		return fmt.Errorf("get VM %s/%s: %w", ns, name, err)
	}
	patch := client.MergeFrom(vm.DeepCopy())
	if vm.Annotations == nil {
		vm.Annotations = map[string]string{}
	}
	vm.Annotations[annotation] = time.Now().UTC().Format(time.RFC3339Nano)
	if err := c.Patch(ctx, vm, patch); err != nil {
		return fmt.Errorf("request %s on VM %s/%s: %w", annotation, ns, name, err)
	}
	return nil
}

// deleteLauncherPod ends a VM's running VMI now, for stop/restart --force.
func deleteLauncherPod(ctx context.Context, c *launcherexec.Client, ns, vm string, grace int64) error {
	vmi := &v1alpha1.VirtualMachineInstance{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: vm}, vmi); err != nil {
		return client.IgnoreNotFound(err)
	}
	if vmi.Status.LauncherPod == "" {
		return nil
	}
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = ns, vmi.Status.LauncherPod
	if err := c.Client.Delete(ctx, pod, client.GracePeriodSeconds(grace)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete launcher pod %s/%s: %w", ns, pod.Name, err)
	}
	return nil
}
