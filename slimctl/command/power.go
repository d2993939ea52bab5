package command

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slimvirt/slimvirt/slimctl/launcherexec"
)

// powerCmd acts on a running VMI through its launcher (a VM's VMI has the VM's name). ctl is
// the launcher's name for the action (`slimvirt-launcher ctl CTL`).
func powerCmd(e *env, action, ctl, short string) *cobra.Command {
	return &cobra.Command{
		Use:   action + " (vm|vmi) NAME",
		Short: short,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch strings.ToLower(args[0]) {
			case "vm", "vmi", "virtualmachine", "virtualmachineinstance":
			default:
				return fmt.Errorf("cannot %s %q: the kind must be vm or vmi", action, args[0])
			}
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			pod, err := c.LauncherPod(cmd.Context(), ns, args[1])
			if err != nil {
				return err
			}
			var out strings.Builder
			if err := c.Exec(cmd.Context(), ns, pod, []string{"ctl", ctl}, launcherexec.Streams{Stdout: &out, Stderr: &out}); err != nil {
				return fmt.Errorf("%s VMI %s: %w: %s", action, args[1], err, strings.TrimSpace(out.String()))
			}
			fmt.Fprintf(e.stdout, "VMI %s was scheduled to %s\n", args[1], action)
			return nil
		},
	}
}
