// Command slimctl is slimvirt's command line (virtctl's job): power, consoles, expose, uploads.
// Installed as kubectl-slim it also works as `kubectl slim ...`.
package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/slimvirt/slimvirt/slimctl/command"
)

func main() {
	name := "slimctl"
	if strings.HasPrefix(filepath.Base(os.Args[0]), "kubectl-") {
		name = "kubectl slim"
	}
	os.Exit(command.Execute(name, os.Stdin, os.Stdout, os.Stderr))
}
