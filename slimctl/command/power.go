package command

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// vmiSubresources maps slimctl's action names to the VMI subresources that do them.
var vmiSubresources = map[string]string{
	"pause":       subresources.Pause,
	"unpause":     subresources.Unpause,
	"soft-reboot": subresources.SoftReboot,
}

// vmiName checks the kind of "(vm|vmi) NAME" and returns the VMI's name: a VM's VMI has the
// VM's name, so both kinds name the same instance.
func vmiName(action string, args []string) (string, error) {
	switch strings.ToLower(args[0]) {
	case "vm", "vms", "virtualmachine", "vmi", "vmis", "virtualmachineinstance":
		return args[1], nil
	}
	return "", fmt.Errorf("cannot %s %q: the kind must be vm or vmi", action, args[0])
}

// vmiActionCmd PUTs a VMI subresource: pause, unpause, soft-reboot.
func vmiActionCmd(e *env, action, short string) *cobra.Command {
	sub := vmiSubresources[action]
	return &cobra.Command{
		Use:   action + " (vm|vmi) NAME",
		Short: short,
		Long: fmt.Sprintf("%s.\n\nNeeds the verb update on virtualmachineinstances/%s in the API group %s.",
			short, sub, subresources.Group),
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := vmiName(action, args)
			if err != nil {
				return err
			}
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			if err := c.Sub.Put(cmd.Context(), subresources.VMIs, ns, name, sub); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "VMI %s was scheduled to %s\n", name, action)
			return nil
		},
	}
}

// guestOSInfoCmd prints what the guest agent says of the guest, as virtctl guestosinfo does.
func guestOSInfoCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "guestosinfo (vm|vmi) NAME",
		Aliases: []string{"guestinfo"},
		Short:   "Show the guest's OS, hostname, timezone and users (needs a guest agent in the guest)",
		Long: "Show the guest's OS, hostname, timezone and users as the QEMU guest agent reports them.\n\n" +
			"Needs the verb get on virtualmachineinstances/guestosinfo in the API group " + subresources.Group + ".",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := vmiName("guestosinfo", args)
			if err != nil {
				return err
			}
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			body, err := c.Sub.Get(cmd.Context(), subresources.VMIs, ns, name, subresources.GuestOSInfo)
			if err != nil {
				return err
			}
			out, err := terminalJSON(body)
			if err != nil {
				return fmt.Errorf("guestosinfo VMI %s/%s: %w", ns, name, err)
			}
			fmt.Fprintln(e.stdout, string(out))
			return nil
		},
	}
}

// terminalJSON indents the guest agent's JSON for a terminal. The guest chooses its strings,
// so control characters that JSON lets through unescaped (DEL, C1 such as CSI) and invalid
// UTF-8 are escaped: the output stays valid JSON and cannot drive the user's terminal.
func terminalJSON(body []byte) ([]byte, error) {
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, bytes.TrimSpace(body), "", "  "); err != nil {
		return nil, fmt.Errorf("the server's answer is not JSON: %w", err)
	}
	var out bytes.Buffer
	b := pretty.Bytes()
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size == 1:
			out.WriteString(`\ufffd`)
		case r != '\n' && unicode.IsControl(r):
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			out.Write(b[:size])
		}
		b = b[size:]
	}
	return out.Bytes(), nil
}
