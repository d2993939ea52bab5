// Command slimvirt-diskcopy, from a containerDisk image, copies the image's disk into the pod
// (copy --src PATH --dst DIR [--stay], runtime/diskcopy; the node agent's seed puts it on
// every node), sends it to the upload endpoint for a registry DataVolume (send ...), and checks hostDisk images on the node and gives them to the launcher's account
// (own FILE DIR REL SIZE..., runtime/hostdisk).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/slimvirt/slimvirt/api/launcherpod"
	"github.com/slimvirt/slimvirt/runtime/diskcopy"
	"github.com/slimvirt/slimvirt/runtime/hostdisk"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: slimvirt-diskcopy copy --src PATH_OR_DIR --dst DIR [--as NAME] | send --url URL --server-name NAME --namespace NS --name DV --token-file F --ca-file F [--src PATH_OR_DIR] | own [--uid N --gid N] FILE DIR REL SIZE for each hostDisk"))
	}
	switch os.Args[1] {
	case "copy":
		fl := flag.NewFlagSet("copy", flag.ExitOnError)
		src := fl.String("src", diskcopy.DefaultSource, "the disk file, or a directory holding exactly one file")
		dst := fl.String("dst", "", "directory to copy the disk into (as disk.img or disk.qcow2)")
		as := fl.String("as", "", "copy the file src under this name instead (kernelBoot's kernel and initrd)")
		stay := fl.Bool("stay", false, "after copying, run until SIGTERM (a container next to the launcher's: a failure is also written for the launcher to read)")
		_ = fl.Parse(os.Args[2:])
		if *dst == "" {
			fail(errors.New("copy: --dst is required"))
		}
		copyFn := diskcopy.Copy
		if *as != "" {
			copyFn = func(src, dst string) (string, error) { return diskcopy.CopyAs(src, dst, *as) }
		}
		path, err := copyFn(*src, *dst)
		if err != nil && *stay {
			if rerr := diskcopy.ReportFailure(*dst, *as, err); rerr != nil {
				fmt.Fprintln(os.Stderr, "slimvirt-diskcopy: report the failure to the launcher:", rerr)
			}
		}
		fail(err)
		fmt.Println("copied", path)
		if *stay {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			<-ctx.Done()
			stop()
		}
	case "send":
		send(os.Args[2:])
	case "own":
		fl := flag.NewFlagSet("own", flag.ExitOnError)
		uid := fl.Int("uid", 107, "new owner")
		gid := fl.Int("gid", 107, "new group")
		_ = fl.Parse(os.Args[2:])
		disks, err := hostdisk.Parse(fl.Args())
		fail(err)
		for _, d := range disks {
			fail(hostdisk.Own(d, *uid, *gid))
			fmt.Println("owned", d.Rel)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

// send sends the image's disk to the upload endpoint (a registry DataVolume's importer pod).
func send(args []string) {
	fl := flag.NewFlagSet("send", flag.ExitOnError)
	src := fl.String("src", diskcopy.DefaultSource, "the disk file, or a directory holding exactly one file")
	var o diskcopy.SendOptions
	fl.StringVar(&o.URL, "url", "", "the upload endpoint's base URL")
	fl.StringVar(&o.ServerName, "server-name", "", "the name the endpoint's certificate must hold")
	fl.StringVar(&o.Namespace, "namespace", "", "the DataVolume's namespace")
	fl.StringVar(&o.Name, "name", "", "the DataVolume's name")
	tokenFile := fl.String("token-file", "", "file holding the upload token")
	caFile := fl.String("ca-file", "", "PEM bundle the endpoint's certificate must chain to")
	_ = fl.Parse(args)
	tok, err := os.ReadFile(*tokenFile)
	fail(err)
	o.Token = string(bytes.TrimSpace(tok))
	o.CA, err = os.ReadFile(*caFile)
	fail(err)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = diskcopy.Send(ctx, *src, o)
	if errors.Is(err, diskcopy.ErrNoDisk) || errors.Is(err, diskcopy.ErrAmbiguous) || errors.Is(err, diskcopy.ErrRefused) {
		failWith(launcherpod.ImporterExitRefused, err)
	}
	fail(err)
	fmt.Println("sent", *src)
}

// fail exits 1 with err on stderr and in the termination log, or returns when err is nil.
func fail(err error) {
	if err != nil {
		failWith(1, err)
	}
}

func failWith(code int, err error) {
	fmt.Fprintln(os.Stderr, "slimvirt-diskcopy:", err)
	_ = os.WriteFile("/dev/termination-log", []byte(err.Error()), 0o644)
	os.Exit(code)
}
