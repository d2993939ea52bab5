package command

import (
	"bytes"
	"encoding/json"
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
			if _, err := launcherCtl(cmd, e, action, args, ctl); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "VMI %s was scheduled to %s\n", args[1], action)
			return nil
		},
	}
}

// guestInfoCmd prints what the guest agent says of the guest, as virtctl guestosinfo does.
func guestInfoCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "guestinfo (vm|vmi) NAME",
		Short: "Show the guest's OS, hostname, timezone and users (needs a guest agent in the guest)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := launcherCtl(cmd, e, "guestinfo", args, "guestinfo")
			if err != nil {
				return err
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, []byte(strings.TrimSpace(out)), "", "  "); err != nil {
				return fmt.Errorf("guestinfo VMI %s: the launcher answered %q: %w", args[1], out, err)
			}
			fmt.Fprintln(e.stdout, pretty.String())
			return nil
		},
	}
}

// launcherCtl runs `slimvirt-launcher ctl CTL` in the launcher of the VMI args[1] (args[0] is
// its kind, vm or vmi) and returns what it printed.
func launcherCtl(cmd *cobra.Command, e *env, action string, args []string, ctl string) (string, error) {
	switch strings.ToLower(args[0]) {
	case "vm", "vmi", "virtualmachine", "virtualmachineinstance":
	default:
		return "", fmt.Errorf("cannot %s %q: the kind must be vm or vmi", action, args[0])
	}
	c, ns, err := e.clients()
	if err != nil {
		return "", err
	}
	pod, err := c.LauncherPod(cmd.Context(), ns, args[1])
	if err != nil {
		return "", err
	}
	var out, errOut strings.Builder
	if err := c.Exec(cmd.Context(), ns, pod, []string{"ctl", ctl}, launcherexec.Streams{Stdout: &out, Stderr: &errOut}); err != nil {
		return "", fmt.Errorf("%s VMI %s: %s (%w)", action, args[1], strings.TrimSpace(errOut.String()+" "+out.String()), err)
	}
	return out.String(), nil
}
