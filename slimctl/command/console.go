package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/slimvirt/slimvirt/api/subresources"
)

// escapeByte ends a console session: Ctrl-], as virtctl and telnet use.
const escapeByte = 0x1d

func consoleCmd(e *env) *cobra.Command {
	var web bool
	cmd := &cobra.Command{
		Use:   "console VMI",
		Short: "Attach to a VMI's serial console (Ctrl-] to leave)",
		Long: `Attach to a VMI's serial console (Ctrl-] to leave). With --web, serve the console
and VNC display to a browser on this machine instead and print the page's URL.

Needs the verb get on virtualmachineinstances/console (and, with --web,
virtualmachineinstances/vnc) in the API group ` + subresources.Group + `.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := e.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if web {
				return e.serveWeb(ctx, c, ns, args[0], "")
			}
			stream, err := c.Sub.Dial(ctx, subresources.VMIs, ns, args[0], subresources.Console)
			if err != nil {
				return err
			}
			restore, err := e.rawTerminal()
			if err != nil {
				_ = stream.Close() // the terminal error is the one to report
				return err
			}
			defer restore()
			fmt.Fprintf(e.stderr, "Successfully connected to %s console. The escape sequence is ^]\r\n", args[0])
			if err := attach(ctx, stream, e.stdin, e.stdout); err != nil {
				return fmt.Errorf("console VMI %s/%s: %w", ns, args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&web, "web", false, "serve the console and VNC to a browser on 127.0.0.1 and print its URL")
	return cmd
}

// rawTerminal puts stdin in raw mode when it is a terminal, so keys (Ctrl-C too) reach the
// guest; restore puts it back.
func (e *env) rawTerminal() (restore func(), err error) {
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}, nil
	}
	old, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("put the terminal in raw mode: %w", err)
	}
	return func() {
		if err := term.Restore(int(f.Fd()), old); err != nil {
			fmt.Fprintf(e.stderr, "restore the terminal: %v (run `reset`)\r\n", err)
		}
	}, nil
}

// attach joins a console stream to the user's terminal until the user types the escape byte,
// the input ends, the server ends the stream or ctx ends. A normal end is nil.
func attach(ctx context.Context, stream io.ReadWriteCloser, in io.Reader, out io.Writer) error {
	input := make(chan error, 1)
	go func() {
		_, err := io.Copy(stream, &escapeReader{r: in})
		input <- err
	}()
	var outErr error
	outDone := make(chan struct{})
	go func() {
		_, outErr = io.Copy(out, stream)
		close(outDone)
	}()
	select {
	case err := <-input:
		// Closing the stream ends the output copy; the error it ends with then is no news.
		cerr := stream.Close()
		<-outDone
		return errors.Join(err, cerr)
	case <-outDone:
		_ = stream.Close() // the server ended the stream; the input copy may stay blocked on the terminal
		return outErr
	case <-ctx.Done():
		cerr := stream.Close()
		<-outDone
		return cerr
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
