// Package ocitar builds container image tarballs from directories and files with
// go-containerregistry, so images can be made and loaded where no registry can be reached.
package ocitar

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slimvirt/slimvirt/internal/atomicfile"
)

// Config describes one image.
type Config struct {
	Tag        string
	Output     string
	RootFS     string   // a directory whose tree becomes the first layer
	Adds       []string // SRC:DST[:MODE[:CAPS]], in one more layer; CAPS as "cap_net_raw,..." (+ep)
	Env        []string
	Entrypoint []string
	Cmd        []string // default arguments, replaced by a container's args
	User       string
}

// Build writes the image described by cfg to cfg.Output.
func Build(cfg Config) error {
	if cfg.Tag == "" || cfg.Output == "" {
		return errors.New("a tag and an output file are required")
	}
	ref, err := name.NewTag(cfg.Tag)
	if err != nil {
		return fmt.Errorf("parse tag %q: %w", cfg.Tag, err)
	}
	img := empty.Image
	if cfg.RootFS != "" {
		layer, err := layerFromTar(func(tw *tar.Writer) error { return writeTree(tw, cfg.RootFS) })
		if err != nil {
			return fmt.Errorf("pack rootfs %s: %w", cfg.RootFS, err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return fmt.Errorf("append rootfs layer: %w", err)
		}
	}
	if len(cfg.Adds) > 0 {
		layer, err := layerFromTar(func(tw *tar.Writer) error { return writeAdds(tw, cfg.Adds) })
		if err != nil {
			return fmt.Errorf("pack added files: %w", err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return fmt.Errorf("append files layer: %w", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, cfg.Env...)
	cf.Config.Entrypoint = cfg.Entrypoint
	cf.Config.Cmd = cfg.Cmd
	cf.Config.User = cfg.User
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("set image config: %w", err)
	}
	return atomicfile.Write(cfg.Output, 0o644, func(w io.Writer) error { return tarball.Write(ref, img, w) })
}

func layerFromTar(fill func(*tar.Writer) error) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := fill(tw); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}

// writeTree packs dir as the root of a layer, keeping modes, owners and symlinks.
func writeTree(tw *tar.Writer, dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		if !info.Mode().IsRegular() && !info.IsDir() && info.Mode()&os.ModeSymlink == 0 {
			return nil // device nodes, sockets and fifos are made by the runtime
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = rel
		if info.IsDir() {
			hdr.Name += "/"
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			return copyFile(tw, path)
		}
		return nil
	})
}

func writeAdds(tw *tar.Writer, adds []string) error {
	dirs := map[string]bool{}
	for _, a := range adds {
		parts := strings.Split(a, ":")
		if len(parts) < 2 || len(parts) > 4 {
			return fmt.Errorf("add %q: want SRC:DST[:MODE[:CAPS]]", a)
		}
		src, dst := parts[0], strings.TrimPrefix(parts[1], "/")
		info, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("add %s: %w", src, err)
		}
		mode := int64(info.Mode().Perm())
		if len(parts) >= 3 {
			if mode, err = strconv.ParseInt(parts[2], 8, 32); err != nil {
				return fmt.Errorf("add %q: mode: %w", a, err)
			}
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: dst, Mode: mode, Size: info.Size()}
		if len(parts) == 4 {
			caps, err := fileCaps(parts[3])
			if err != nil {
				return fmt.Errorf("add %q: %w", a, err)
			}
			hdr.PAXRecords = map[string]string{xattrCapability: caps}
			hdr.Format = tar.FormatPAX
		}
		for _, p := range parents(dst) {
			if dirs[p] {
				continue
			}
			dirs[p] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if err := copyFile(tw, src); err != nil {
			return fmt.Errorf("add %s: %w", src, err)
		}
	}
	return nil
}

// parents lists a path's parent directories, outermost first.
func parents(p string) []string {
	var out []string
	for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}

func copyFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
