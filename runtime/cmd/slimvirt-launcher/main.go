// Command slimvirt-launcher runs one VMI as PID 1 of a launcher pod's compute container.
// "slimvirt-launcher ctl CMD" sends a command (pause, unpause, reboot, reset, shutdown, status,
// stats, guestinfo) to the control socket; "slimvirt-launcher seed-node DIR" puts on a node
// what its launchers share (the node agent's seed init container runs it).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/runtime/launcher"
	"github.com/slimvirt/slimvirt/runtime/podnic"
)

func main() {
	cfg := launcher.DefaultConfig()
	flag.StringVar(&cfg.TerminationLog, "termination-log", cfg.TerminationLog, "file for the one-line reason of a failure")
	flag.StringVar(&cfg.Libvirt.Virtlogd, "virtlogd", cfg.Libvirt.Virtlogd, "virtlogd binary to run QEMU's log through (e.g. /usr/sbin/virtlogd); empty runs without virtlogd")
	flag.StringVar(&cfg.Libvirt.CapsSeedDir, "caps-seed-dir", cfg.Libvirt.CapsSeedDir, "QEMU capabilities probed for the node (seed-caps); empty lets libvirtd probe QEMU")
	tap := flag.String("tap", "", "attach the VMI's interface to this existing tap, without DHCP (running the launcher alone)")
	flag.Parse()
	if flag.NArg() > 0 {
		os.Exit(launcher.Command(cfg, flag.Args()))
	}
	if *tap != "" {
		cfg.Network = &podnic.Tap{Tap: *tap}
	}
	cfg.AllowEmulation = os.Getenv(launcherpod.EnvAllowEmulation) == "true"
	vmi, err := launcher.ReadVMI(os.Getenv(launcherpod.EnvVMI), launcherpod.VMIFile, os.Getenv(launcherpod.EnvVMISHA256))
	var l *launcher.Launcher
	if err == nil {
		l, err = launcher.New(cfg, vmi)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = os.WriteFile(cfg.TerminationLog, []byte(err.Error()), 0o644)
		os.Exit(launcherpod.ExitSetupFailed)
	}
	os.Exit(l.Run(context.Background()))
}
