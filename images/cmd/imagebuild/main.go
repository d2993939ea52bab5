// Command imagebuild makes a container image tarball (docker-archive, loadable with
// `ctr images import`) from a root filesystem and single files, without a registry or a daemon.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/slimvirt/slimvirt/images/ocitar"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var cfg ocitar.Config
	var adds, envs, entry, cmd list
	flag.StringVar(&cfg.Tag, "tag", "", "image reference, e.g. slimvirt.io/launcher:dev")
	flag.StringVar(&cfg.Output, "o", "", "output tarball")
	flag.StringVar(&cfg.RootFS, "rootfs", "", "directory to use as the first layer")
	flag.Var(&adds, "add", "SRC:DST[:MODE[:CAPS]] file to add, CAPS as cap_net_raw,... for file capabilities +ep (repeatable)")
	flag.Var(&envs, "env", "K=V environment (repeatable)")
	flag.Var(&entry, "entrypoint", "entrypoint argument (repeatable, in order)")
	flag.Var(&cmd, "cmd", "default argument (repeatable, in order; a container's args replace them)")
	flag.StringVar(&cfg.User, "user", "", "user to run as")
	flag.Parse()
	cfg.Adds, cfg.Env, cfg.Entrypoint, cfg.Cmd = adds, envs, entry, cmd
	if err := ocitar.Build(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}
