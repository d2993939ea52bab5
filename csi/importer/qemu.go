package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// limits are the resources a qemu-img run may use: the image is the tenant's, and qemu-img
// parses it as root on the node. CDI runs qemu-img info under the same 30 s CPU, 1 GiB address
// space limits.
type limits struct {
	cpu time.Duration
	as  uint64
}

var (
	inspectLimits = limits{cpu: 30 * time.Second, as: 1 << 30}
)

// convertLimits keeps the address-space limit and allows a generous 60 s of CPU plus 1 s per
// 16 MiB of the volume (decompressing zlib or zstd clusters runs at a few hundred MB/s).
func convertLimits(size int64) limits {
	return limits{cpu: 60*time.Second + time.Duration(size/(16<<20))*time.Second, as: 1 << 30}
}

// imageOpts names the staged qcow2 to qemu-img with driver and protocol pinned: the file is
// passed as descriptor fd and opened as /dev/fd/N by the file protocol, so no name in it can
// be read as json: options or another protocol, and no format probing happens.
func imageOpts(driver string, fd int) string {
	return "driver=" + driver + ",file.driver=file,file.filename=/dev/fd/" + strconv.Itoa(fd)
}

// maxQemuOutput bounds what is read from qemu-img; its JSON for one image is a few KiB.
const maxQemuOutput = 1 << 20

// boundedBuffer keeps the first maxQemuOutput bytes and drops the rest.
type boundedBuffer struct{ bytes.Buffer }

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := maxQemuOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// qemuImg runs qemu-img with args under lim; files become descriptors 3, 4, ... in the child.
// The limits are in place before qemu-img reads a byte: prlimit(1) execs it with them set;
// without prlimit, the shell's ulimit does the same. (Setting them on the child once it runs
// would leave a window in which a quick qemu-img works on a tenant's image unlimited.)
func qemuImg(ctx context.Context, lim limits, files []*os.File, args ...string) (stdout []byte, err error) {
	cpu := strconv.FormatInt(int64(lim.cpu/time.Second), 10)
	as := strconv.FormatUint(lim.as, 10)
	var cmd *exec.Cmd
	if p, err := exec.LookPath("prlimit"); err == nil {
		cmd = exec.CommandContext(ctx, p, append([]string{"--cpu=" + cpu, "--as=" + as, "--", "qemu-img"}, args...)...)
	} else {
		// ulimit -v counts KiB; "$@" passes args unparsed by the shell.
		script := "ulimit -t " + cpu + " && ulimit -v " + strconv.FormatUint(lim.as>>10, 10) + ` && exec qemu-img "$@"`
		cmd = exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, "qemu-img"}, args...)...)
	}
	// glibc reserves 64 MiB of address space for each thread's malloc arena, up to 8 per core:
	// qemu-img's I/O threads alone could then pass the address-space limit, and it aborts in
	// qemu_thread_create with a valid image. Two arenas keep it near 200 MiB.
	cmd.Env = append(os.Environ(), "MALLOC_ARENA_MAX=2")
	var out, stderr boundedBuffer
	cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = &out, &stderr, files
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu-img %s: %w", args[0], err)
	}
	err = cmd.Wait()
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && (ws.Signal() == syscall.SIGXCPU || ws.Signal() == syscall.SIGKILL) {
				return out.Bytes(), permanent("qemu-img %s exceeded its limits (%s CPU, %d MiB of memory): the image is refused", args[0], lim.cpu, lim.as>>20)
			}
		}
		return out.Bytes(), &qemuError{err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return out.Bytes(), nil
}

type qemuError struct {
	err    error
	stderr string
}

func (e *qemuError) Error() string { return fmt.Sprintf("%v: %s", e.err, e.stderr) }
func (e *qemuError) Unwrap() error { return e.err }

// imageInfo is what the importer reads from qemu-img info --output=json.
type imageInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

// parseImageInfo reads qemu-img info's JSON and refuses an image that refers to any other
// file: a backing file (under any of the names qemu uses for it), an external data file, or
// encryption. The header check has refused these already; this is the same rule as qemu
// itself understood the image.
func parseImageInfo(b []byte) (imageInfo, error) {
	if len(b) > maxQemuOutput {
		return imageInfo{}, permanent("qemu-img info printed more than %d bytes", maxQemuOutput)
	}
	var raw struct {
		imageInfo
		BackingFilename     *string         `json:"backing-filename"`
		FullBackingFilename *string         `json:"full-backing-filename"`
		BackingFormat       *string         `json:"backing-filename-format"`
		BackingImage        json.RawMessage `json:"backing-image"`
		DataFile            *string         `json:"data-file"`
		Encrypted           bool            `json:"encrypted"`
		FormatSpecific      struct {
			Data struct {
				DataFile    *string         `json:"data-file"`
				DataFileRaw *bool           `json:"data-file-raw"`
				Encrypt     json.RawMessage `json:"encrypt"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return imageInfo{}, fmt.Errorf("parse qemu-img info: %w", err)
	}
	fs := raw.FormatSpecific.Data
	for _, name := range []*string{raw.BackingFilename, raw.FullBackingFilename} {
		if name != nil {
			return imageInfo{}, permanent("import refused: it has a backing file %s; only self-contained images are accepted", strconv.Quote(trim(*name)))
		}
	}
	switch {
	case raw.BackingFormat != nil || len(raw.BackingImage) > 0:
		return imageInfo{}, permanent("import refused: it has a backing file; only self-contained images are accepted")
	case raw.DataFile != nil || fs.DataFile != nil:
		name := raw.DataFile
		if name == nil {
			name = fs.DataFile
		}
		return imageInfo{}, permanent("import refused: it names an external data file %s; only self-contained images are accepted", strconv.Quote(trim(*name)))
	case fs.DataFileRaw != nil && *fs.DataFileRaw:
		return imageInfo{}, permanent("import refused: it has the data-file-raw flag; only self-contained images are accepted")
	case raw.Encrypted || len(fs.Encrypt) > 0:
		return imageInfo{}, permanent("import refused: it is encrypted; import it decrypted")
	case raw.VirtualSize < 0:
		return imageInfo{}, permanent("import refused: virtual size %d", raw.VirtualSize)
	}
	return raw.imageInfo, nil
}

func trim(s string) string {
	if len(s) > 256 {
		return s[:256] + "..."
	}
	return s
}

// qcow2Source is where qemu-img reads the qcow2 image from: the staged file, or an NBD export
// of the remote file.
type qcow2Source interface {
	// attach returns the file qemu-img inherits as descriptor 3, the --image-opts that name
	// the image through it, and what to call once qemu-img has exited.
	attach() (*os.File, string, func(), error)
}

// stagedFile is a qcow2 staged in a scratch file.
type stagedFile struct{ f *os.File }

func (s stagedFile) attach() (*os.File, string, func(), error) {
	return s.f, imageOpts("qcow2", 3), func() {}, nil
}

// qemuImgOn runs qemu-img with the image of src as descriptor 3 and files after it.
func qemuImgOn(ctx context.Context, lim limits, src qcow2Source, files []*os.File, args func(opts string) []string) ([]byte, error) {
	f, opts, done, err := src.attach()
	if err != nil {
		return nil, err
	}
	defer done()
	return qemuImg(ctx, lim, append([]*os.File{f}, files...), args(opts)...)
}

// qemuInfo inspects the image as qcow2.
func qemuInfo(ctx context.Context, src qcow2Source) (imageInfo, error) {
	out, err := qemuImgOn(ctx, inspectLimits, src, nil, func(opts string) []string {
		return []string{"info", "--output=json", "--image-opts", opts}
	})
	if err != nil {
		var qe *qemuError
		if errors.As(err, &qe) {
			return imageInfo{}, permanent("qcow2 image is not valid: %s", qe.stderr)
		}
		return imageInfo{}, err
	}
	info, err := parseImageInfo(out)
	if err != nil {
		return info, err
	}
	if info.Format != "qcow2" {
		return info, permanent("image claims to be qcow2 but qemu-img sees %s", info.Format)
	}
	return info, nil
}

// qemuCheck refuses a qcow2 whose metadata points past its end or is otherwise corrupt:
// qemu-img convert would read the missing clusters as zeros and succeed.
func qemuCheck(ctx context.Context, src qcow2Source) error {
	out, err := qemuImgOn(ctx, inspectLimits, src, nil, func(opts string) []string {
		return []string{"check", "--output=json", "--image-opts", opts}
	})
	var pe *PermanentError
	if errors.As(err, &pe) || ctx.Err() != nil {
		return err
	}
	var res struct {
		Corruptions int `json:"corruptions"`
		CheckErrors int `json:"check-errors"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return permanent("qcow2 image could not be checked: %v", err)
	}
	if res.Corruptions > 0 || res.CheckErrors > 0 {
		return permanent("qcow2 image is truncated or corrupt: qemu-img check found %d corruptions and %d errors", res.Corruptions, res.CheckErrors)
	}
	return nil
}

// qemuConvert writes the qcow2 (src) into the raw disk (dst, a descriptor) with -n
// --target-is-zero: only allocated clusters are written and disk.img stays sparse.
func qemuConvert(ctx context.Context, src qcow2Source, dst *os.File, size int64) error {
	_, err := qemuImgOn(ctx, convertLimits(size), src, []*os.File{dst}, func(opts string) []string {
		return []string{"convert", "-n", "--target-is-zero", "-t", "writeback", "-W",
			"--image-opts", opts, "--target-image-opts", imageOpts("raw", 4)}
	})
	var qe *qemuError
	if errors.As(err, &qe) {
		return permanent("convert qcow2 to raw: %w", err)
	}
	return err
}
