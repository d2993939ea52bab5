// Command isobuild writes an ISO 9660 image (with Joliet names) of the files given, for the
// CD-ROM images the local cluster serves: isobuild -o OUT.iso -label L -add SRC:PATH ...
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/slimvirt/slimvirt/runtime/iso9660"
)

type adds []iso9660.File

func (a *adds) String() string { return fmt.Sprint(len(*a), " files") }

func (a *adds) Set(s string) error {
	src, dst, ok := strings.Cut(s, ":")
	if !ok || dst == "" {
		return fmt.Errorf("want SRC:PATH, got %q", s)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	*a = append(*a, iso9660.File{Path: dst, Data: data})
	return nil
}

func main() {
	var files adds
	out := flag.String("o", "", "output ISO")
	label := flag.String("label", "CDROM", "volume label (at most 16 bytes)")
	flag.Var(&files, "add", "SRC:PATH file to add (repeatable)")
	flag.Parse()
	if err := write(*out, *label, files); err != nil {
		fmt.Fprintln(os.Stderr, "isobuild:", err)
		os.Exit(1)
	}
}

func write(out, label string, files []iso9660.File) error {
	if out == "" {
		return fmt.Errorf("-o is required")
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create %s: %w", out, err)
	}
	if err := iso9660.Write(f, label, files, time.Unix(0, 0).UTC()); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	return f.Close()
}
