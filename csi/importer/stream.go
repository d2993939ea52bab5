package importer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/importer/nbd"
	"github.com/slimvirt/slimvirt/internal/qcow2"
)

// streamable says whether a qcow2 from body can be converted while it downloads: the server
// serves ranges of a file it names with a validator and a length, and no checksum is asked
// for. A checksum keeps the staging path: it must cover every byte of the file before
// qemu-img parses any of them, and qemu-img reads only the clusters the image uses, in its
// own order.
func streamable(req Request, body *resumingBody) bool {
	return req.Checksum == "" && body.ranges && body.valid != "" && len(body.valid) <= maxValidator && body.size > 0
}

// streamOrStage converts a streamable qcow2 while it downloads (streamed) or returns what the
// image is to be written from: body, with the bytes peeked at put back; or, when the server
// answered a range request with the whole file (it changed, or ignores Range), body opened
// again from byte zero, on a disk reset to holes, to be staged.
func (im *Importer) streamOrStage(ctx context.Context, req Request, body *resumingBody, t Target, progress func(float64)) (io.Reader, bool, error) {
	if !streamable(req, body) {
		return body, false, nil
	}
	head, qcow, rest, err := peekQcow2(body)
	if err != nil || !qcow {
		return rest, false, err
	}
	err = im.streamQcow2(ctx, body, head, t, progress)
	if err == nil || !errors.Is(err, errWholeFile) || ctx.Err() != nil {
		return nil, true, err
	}
	im.cfg.Log.Info("import starts over, staged", "url", req.URL, "reason", err.Error())
	if err := diskimg.Reset(t.Disk); err != nil {
		return nil, true, err
	}
	if err := body.open(); err != nil {
		return nil, true, err
	}
	return body, false, nil
}

// peekQcow2 reads the start of body: the first cluster of a qcow2 image (qcow2 true), or the
// few bytes that showed it is not one, which r then yields again before the rest of body.
func peekQcow2(body io.Reader) (head []byte, qcow bool, r io.Reader, err error) {
	magic := make([]byte, len(magicQcow2))
	n, err := io.ReadFull(body, magic)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, false, nil, fmt.Errorf("read image: %w", err)
	}
	if n < len(magic) || string(magic) != magicQcow2 {
		return nil, false, io.MultiReader(bytes.NewReader(magic[:n]), body), nil
	}
	head = make([]byte, qcow2.MaxClusterSize)
	copy(head, magic)
	m, err := io.ReadFull(body, head[n:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, false, nil, fmt.Errorf("read qcow2 header: %w", err)
	}
	return head[:n+m], true, nil, nil
}

// streamQcow2 converts the qcow2 image while it downloads, without staging it: qemu-img reads
// it from an NBD export served in this process over a socketpair, backed by range requests
// through the import's own HTTP client (so every egress check and Range answer check
// applies). head is the image's first cluster, read from the first GET's body.
func (im *Importer) streamQcow2(ctx context.Context, body *resumingBody, head []byte, t Target, progress func(float64)) error {
	if _, err := checkHeader(head, body.size, t); err != nil {
		return err
	}
	_ = body.Close() // the rest comes by range requests
	file := &remoteFile{client: body.client, newReq: body.newReq, url: body.url, size: body.size, valid: body.valid,
		retries: im.cfg.Retries, backoff: im.cfg.Backoff, idle: im.cfg.Idle, log: im.cfg.Log}
	ra := newReadAhead(ctx, file, progress)
	defer ra.Close()
	ra.seed(head)
	err := convertQcow2(ctx, &nbdExport{export: nbd.Export{Size: body.size, ReadAt: ra.ReadAt}, log: im.cfg.Log}, t, ra.report)
	if ferr := ra.failure(); err != nil && ferr != nil && ctx.Err() == nil {
		// qemu-img saw only an I/O error; the fetch knows why.
		var pe *PermanentError
		if errors.As(ferr, &pe) {
			return &PermanentError{Err: fmt.Errorf("convert qcow2 while downloading: %w", ferr)}
		}
		return fmt.Errorf("convert qcow2 while downloading: %w", ferr)
	}
	return err
}

// nbdExport serves the image to each qemu-img run over a fresh socketpair: no path anyone
// could connect to, nothing left behind when the import ends.
type nbdExport struct {
	export nbd.Export
	log    *slog.Logger
}

func (e *nbdExport) attach() (*os.File, string, func(), error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, "", nil, fmt.Errorf("make socketpair for qemu-img: %w", err)
	}
	// Non-blocking, so that closing it ends a Serve blocked on it.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		_ = unix.Close(fds[0]) // not used yet; the error above is the one to report
		_ = unix.Close(fds[1])
		return nil, "", nil, fmt.Errorf("make socketpair for qemu-img: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "nbd-server"), os.NewFile(uintptr(fds[1]), "nbd-client")
	served := make(chan error, 1)
	go func() { served <- nbd.Serve(ours, e.export) }()
	done := func() {
		_ = theirs.Close() // qemu-img has exited; its end is ours to drop
		_ = ours.Close()   // ends Serve if qemu-img left mid-request
		if err := <-served; err != nil && !errors.Is(err, os.ErrClosed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, unix.EPIPE) {
			e.log.Info("nbd export for qemu-img ended", "err", err)
		}
	}
	return theirs, "driver=qcow2,file.driver=nbd,file.server.type=fd,file.server.str=3", done, nil
}
