package command

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/slimvirt/slimvirt/api/v1alpha1"
	"github.com/slimvirt/slimvirt/slimctl/expose"
)

func exposeCmd(e *env) *cobra.Command {
	var o expose.Options
	cmd := &cobra.Command{
		Use:   "expose (vm|vmi|vmirs) NAME --name SERVICE --port PORT [--target-port PORT] [--type TYPE]",
		Short: "Make a Service for a VM, a VMI or a VMI replica set",
		Example: `  # RDP to a Windows VM through a NodePort, as in the KubeVirt guide
  slimctl expose vm win10 --name windows-app-server --port 27017 --target-port 3389 --type NodePort`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			kind, sel, err := selectorOf(ctx, c.Client, ns, args[0], args[1])
			if err != nil {
				return err
			}
			o.Namespace = ns
			svc, err := expose.Service(kind, args[1], sel, o)
			if err != nil {
				return err
			}
			if err := c.Client.Create(ctx, svc); err != nil {
				return fmt.Errorf("create Service %s/%s: %w", ns, svc.Name, err)
			}
			fmt.Fprintf(e.stdout, "Service %s exposed for %s %s (selector %s)\n", svc.Name, kind, args[1], expose.SelectorString(sel))
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "", "name of the Service (required)")
	cmd.Flags().Int32Var(&o.Port, "port", 0, "port the Service listens on (required)")
	cmd.Flags().StringVar(&o.TargetPort, "target-port", "", "port in the guest (default: --port)")
	cmd.Flags().StringVar(&o.Type, "type", "ClusterIP", "ClusterIP, NodePort or LoadBalancer")
	cmd.Flags().StringVar(&o.Protocol, "protocol", "TCP", "TCP, UDP or SCTP")
	return cmd
}

// selectorOf returns the labels that select the launcher pods of a VM, VMI or VMIRS.
func selectorOf(ctx context.Context, c client.Client, ns, kind, name string) (string, map[string]string, error) {
	key := client.ObjectKey{Namespace: ns, Name: name}
	notFound := func(kind string, err error) error {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%s %s not found in namespace %s", kind, name, ns)
		}
		return fmt.Errorf("get %s %s/%s: %w", kind, ns, name, err)
	}
	switch strings.ToLower(kind) {
	case "vmi", "vmis", "virtualmachineinstance":
		vmi := &v1alpha1.VirtualMachineInstance{}
		if err := c.Get(ctx, key, vmi); err != nil {
			return "", nil, notFound("VMI", err)
		}
		return "VirtualMachineInstance", vmi.Labels, nil
	case "vm", "vms", "virtualmachine":
		vm := &v1alpha1.VirtualMachine{}
		if err := c.Get(ctx, key, vm); err != nil {
			return "", nil, notFound("VM", err)
		}
		return "VirtualMachine", vm.Spec.Template.ObjectMeta.Labels, nil
	case "vmirs", "virtualmachineinstancereplicaset":
		rs := &v1alpha1.VirtualMachineInstanceReplicaSet{}
		if err := c.Get(ctx, key, rs); err != nil {
			return "", nil, notFound("VMIRS", err)
		}
		return "VirtualMachineInstanceReplicaSet", rs.Spec.Template.ObjectMeta.Labels, nil
	}
	return "", nil, fmt.Errorf("cannot expose %q: the kind must be vm, vmi or vmirs", kind)
}
