package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/slimvirt/slimvirt/csi/egress"
)

// errWholeFile is a 200 answer to a range request: the file changed on the server (If-Range
// failed) or the server ignores Range. Either way the import can only start over.
var errWholeFile = errors.New("the server sent the whole file: it changed on the server or ignores Range")

// remoteFile reads byte ranges of the file an import's first GET announced: size bytes under
// validator valid. Every answer must be exactly the range asked for of that file; anything
// else ends the import.
type remoteFile struct {
	client  *http.Client
	newReq  func(ctx context.Context) (*http.Request, error)
	url     string
	size    int64
	valid   string
	retries int
	backoff time.Duration
	idle    time.Duration
	log     *slog.Logger
}

// fetch fills bufs, one after the other, with the bytes from off on, calling filled after each
// read with the index of the buffer and how many of its bytes are in. A dropped connection is
// asked again from the byte it stopped at.
func (f *remoteFile) fetch(ctx context.Context, off int64, bufs [][]byte, filled func(i, n int)) error {
	var total int64
	for _, b := range bufs {
		total += int64(len(b))
	}
	if off < 0 || total <= 0 || off+total > f.size {
		return fmt.Errorf("read %s: bytes %d-%d are outside the %d-byte file", f.url, off, off+total-1, f.size)
	}
	pos := rangePos{bufs: bufs}
	var last error
	for attempt := 0; attempt <= f.retries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, f.backoff<<(attempt-1)); err != nil {
				return err
			}
		}
		err := f.once(ctx, off+pos.done, off+total-1, &pos, filled)
		if err == nil {
			return nil
		}
		var pe *PermanentError
		if errors.As(err, &pe) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		last = err
		f.log.Info("range request retried", "url", f.url, "offset", off+pos.done, "attempt", attempt+1, "err", err)
	}
	return last
}

// rangePos is how far a fetch has filled its buffers.
type rangePos struct {
	bufs    [][]byte
	i, n    int
	done    int64
	scratch [1]byte
}

// once asks for bytes first..last and reads them into pos.
func (f *remoteFile) once(ctx context.Context, first, last int64, pos *rangePos, filled func(i, n int)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := f.newReq(ctx)
	if err != nil {
		return &PermanentError{Err: err}
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(first, 10)+"-"+strconv.FormatInt(last, 10))
	req.Header.Set("If-Range", f.valid)
	watchdog := time.AfterFunc(f.idle, cancel)
	defer watchdog.Stop()
	resp, err := f.client.Do(req)
	if err != nil {
		if ref, ok := egress.AsRefused(err); ok {
			return &PermanentError{Err: ref}
		}
		var pe *PermanentError
		if errors.As(err, &pe) {
			return pe
		}
		return fmt.Errorf("GET %s bytes %d-%d: %w", f.url, first, last, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusOK:
		return &PermanentError{Err: fmt.Errorf("GET %s bytes %d-%d: %w", f.url, first, last, errWholeFile)}
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("GET %s bytes %d-%d: server answered %s", f.url, first, last, resp.Status)
	default:
		return permanent("GET %s bytes %d-%d: server answered %s", f.url, first, last, resp.Status)
	}
	if why := rangeMismatch(resp, first, last, f.size, f.valid); why != "" {
		return permanent("GET %s bytes %d-%d: %s", f.url, first, last, why)
	}
	end := len(pos.bufs) - 1
	for pos.i <= end {
		b := pos.bufs[pos.i]
		n, err := resp.Body.Read(b[pos.n:])
		if n > 0 {
			watchdog.Reset(f.idle)
			pos.n += n
			pos.done += int64(n)
			if pos.i < end || pos.n < len(b) {
				filled(pos.i, pos.n)
			}
			if pos.n == len(b) {
				pos.i, pos.n = pos.i+1, 0
			}
		}
		if err != nil && pos.i <= end {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read %s at byte %d: %w", f.url, first+pos.done, err)
		}
	}
	// A body longer than the range it announced is not the file first announced; the last
	// bytes are handed on only once the body ended where it said.
	if n, _ := io.ReadFull(resp.Body, pos.scratch[:]); n > 0 {
		return permanent("GET %s bytes %d-%d: the server sent more bytes than the range", f.url, first, last)
	}
	filled(end, len(pos.bufs[end]))
	return nil
}

// rangeMismatch says why a 206 answer is not bytes first..last of the size-byte file named
// valid, or "".
func rangeMismatch(resp *http.Response, first, last, size int64, valid string) string {
	a, b, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case err != nil:
		return err.Error()
	case a != first || b != last || total != size:
		return fmt.Sprintf("server sent range %q, asked for bytes %d-%d/%d", resp.Header.Get("Content-Range"), first, last, size)
	case resp.ContentLength >= 0 && resp.ContentLength != last-first+1:
		return fmt.Sprintf("server announced %d bytes for a %d-byte range", resp.ContentLength, last-first+1)
	}
	if v := validator(resp.Header); valid != "" && v != "" && v != valid {
		return "the file changed on the server (validator " + v + ", was " + valid + ")"
	}
	return ""
}
