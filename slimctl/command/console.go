package command

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/slimvirt/slimvirt/slimctl/launcherexec"
)

// escapeByte ends a console session: Ctrl-], as virtctl and telnet use.
const escapeByte = 0x1d

func consoleCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "console VMI",
		Short: "Attach to a VMI's serial console (Ctrl-] to leave)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			pod, err := c.LauncherPod(cmd.Context(), ns, args[0])
			if err != nil {
				return err
			}
			tty := false
			if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				old, err := term.MakeRaw(int(f.Fd()))
				if err != nil {
					return fmt.Errorf("put the terminal in raw mode: %w", err)
				}
				defer func() {
					if err := term.Restore(int(f.Fd()), old); err != nil {
						fmt.Fprintf(e.stderr, "restore the terminal: %v (run `reset`)\r\n", err)
					}
				}()
				tty = true
			}
			fmt.Fprintf(e.stderr, "Successfully connected to %s console. The escape sequence is ^]\r\n", args[0])
			in := &escapeReader{r: e.stdin}
			err = c.Exec(cmd.Context(), ns, pod, []string{"console"}, launcherexec.Streams{Stdin: in, Stdout: e.stdout, Stderr: e.stderr, TTY: tty})
			if in.escaped || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		},
	}
}

// escapeReader passes input through until the escape byte, then reports EOF.
type escapeReader struct {
	r       io.Reader
	escaped bool
}

func (e *escapeReader) Read(p []byte) (int, error) {
	if e.escaped {
		return 0, io.EOF
	}
	n, err := e.r.Read(p)
	if i := bytes.IndexByte(p[:n], escapeByte); i >= 0 {
		e.escaped = true
		return i, nil
	}
	return n, err
}
