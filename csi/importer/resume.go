package importer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/slimvirt/slimvirt/csi/egress"
)

// PermanentError is a failure that retrying will not fix (404, a bad checksum, a corrupt image).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

func permanent(format string, args ...any) error {
	return &PermanentError{Err: fmt.Errorf(format, args...)}
}

// resumingBody reads an HTTP resource from start to end. When the connection drops mid-body it
// asks again from the byte it stopped at (Range, guarded by If-Range so a file that changed on
// the server is not stitched together), so a flaky link costs a reconnect, not a restart.
type resumingBody struct {
	ctx     context.Context
	client  *http.Client
	newReq  func(ctx context.Context) (*http.Request, error)
	url     string
	body    io.ReadCloser
	off     int64
	size    int64 // -1 when the server did not say
	ranges  bool
	valid   string // ETag or Last-Modified of the first response
	retries int
	backoff time.Duration
	log     *slog.Logger
	resumes int
	// idle cancels a request that delivers no byte for this long, so a stalled server becomes
	// a dropped connection that is resumed instead of a hang.
	idle     time.Duration
	watchdog *time.Timer
	cancel   context.CancelFunc
}

// do sends req under a context the idle watchdog can cancel.
func (r *resumingBody) do(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	if r.watchdog != nil {
		r.watchdog.Stop()
	}
	if r.cancel != nil {
		r.cancel()
	}
	r.cancel = cancel
	r.watchdog = time.AfterFunc(r.idle, cancel)
	resp, err := r.client.Do(req.WithContext(ctx))
	if err != nil {
		cancel()
	}
	return resp, err
}

// open sends the first GET; transient failures (connection errors, 5xx, 429) are retried.
func (r *resumingBody) open() error {
	var last error
	for attempt := 0; attempt <= r.retries; attempt++ {
		if attempt > 0 {
			if err := sleep(r.ctx, r.backoff<<(attempt-1)); err != nil {
				return err
			}
		}
		req, err := r.newReq(r.ctx)
		if err != nil {
			return &PermanentError{Err: err}
		}
		resp, err := r.do(req)
		if err != nil {
			if r.ctx.Err() != nil {
				return r.ctx.Err()
			}
			var pe *PermanentError
			if errors.As(err, &pe) {
				return pe
			}
			if ref, ok := egress.AsRefused(err); ok {
				r.log.Info("import refused", "url", r.url, "err", err)
				return &PermanentError{Err: ref}
			}
			last = fmt.Errorf("GET %s: %w", r.url, err)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			_ = resp.Body.Close() // an error page, not read
			last = fmt.Errorf("GET %s: server answered %s", r.url, resp.Status)
			if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
				continue
			}
			return &PermanentError{Err: last}
		}
		r.adopt(resp)
		return nil
	}
	return last
}

// adopt takes a 200 response as the whole image from byte zero.
func (r *resumingBody) adopt(resp *http.Response) {
	r.body = resp.Body
	r.off = 0
	r.size = resp.ContentLength
	r.ranges = strings.Contains(resp.Header.Get("Accept-Ranges"), "bytes")
	r.valid = validator(resp.Header)
}

// validator is what tells this version of a file from another: a strong ETag, or else
// Last-Modified (a weak ETag may not be used with If-Range).
func validator(h http.Header) string {
	v := h.Get("ETag")
	if v == "" || strings.HasPrefix(v, "W/") {
		v = h.Get("Last-Modified")
	}
	return v
}

// openFrom continues an image a killed run began: it asks for the bytes from off of the
// total-byte file the server named valid. It answers true when the server sends exactly
// those bytes of that file; false when the body now holds the whole image from byte zero
// instead (the file changed, the server ignored Range, or its answer to the Range request
// did not add up). Transient failures are retried as open retries them.
func (r *resumingBody) openFrom(off, total int64, valid string) (bool, error) {
	var last error
	for attempt := 0; attempt <= r.retries; attempt++ {
		if attempt > 0 {
			if err := sleep(r.ctx, r.backoff<<(attempt-1)); err != nil {
				return false, err
			}
		}
		req, err := r.newReq(r.ctx)
		if err != nil {
			return false, &PermanentError{Err: err}
		}
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		req.Header.Set("If-Range", valid)
		resp, err := r.do(req)
		if err != nil {
			if r.ctx.Err() != nil {
				return false, r.ctx.Err()
			}
			var pe *PermanentError
			if errors.As(err, &pe) {
				return false, pe
			}
			if ref, ok := egress.AsRefused(err); ok {
				return false, &PermanentError{Err: ref}
			}
			last = fmt.Errorf("GET %s from byte %d: %w", r.url, off, err)
			continue
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			r.log.Info("import starts over", "url", r.url, "offset", off, "reason", "the server sent the whole file: it changed or ignores Range")
			r.adopt(resp)
			return false, nil
		case resp.StatusCode == http.StatusPartialContent:
			if why := partialMismatch(resp, off, total, valid); why != "" {
				_ = resp.Body.Close() // not the bytes asked for, not read
				r.log.Info("import starts over", "url", r.url, "offset", off, "reason", why)
				return false, r.open()
			}
			r.body, r.off, r.size, r.ranges, r.valid = resp.Body, off, total, true, valid
			return true, nil
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
			_ = resp.Body.Close() // an error page, not read
			last = fmt.Errorf("GET %s from byte %d: server answered %s", r.url, off, resp.Status)
		default:
			_ = resp.Body.Close() // 416 and the like: not the bytes asked for, not read
			r.log.Info("import starts over", "url", r.url, "offset", off, "reason", "server answered "+resp.Status)
			return false, r.open()
		}
	}
	return false, last
}

// partialMismatch says why a 206 answer is not bytes off..total-1 of the file named valid, or "".
func partialMismatch(resp *http.Response, off, total int64, valid string) string {
	return rangeMismatch(resp, off, total-1, total, valid)
}

// parseContentRange reads "bytes first-last/size" with every number given.
func parseContentRange(s string) (first, last, size int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", s)
	spec, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, total, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	nums := [3]int64{}
	for i, n := range []string{a, b, total} {
		if n == "" || len(n) > 19 || strings.TrimLeft(n, "0123456789") != "" {
			return 0, 0, 0, bad
		}
		if nums[i], err = strconv.ParseInt(n, 10, 64); err != nil {
			return 0, 0, 0, bad
		}
	}
	if nums[0] > nums[1] || nums[1] >= nums[2] {
		return 0, 0, 0, bad
	}
	return nums[0], nums[1], nums[2], nil
}

func (r *resumingBody) Read(p []byte) (int, error) {
	if r.size >= 0 {
		// Never more than the server announced: a longer body is not part of the image.
		if r.off >= r.size {
			return 0, io.EOF
		}
		p = p[:min(int64(len(p)), r.size-r.off)]
	}
	for {
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.watchdog.Reset(r.idle)
		}
		if err == nil || (err == io.EOF && (r.size < 0 || r.off == r.size)) {
			return n, err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if r.ctx.Err() != nil {
			return n, r.ctx.Err()
		}
		if rerr := r.resume(err); rerr != nil {
			return n, rerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

// resume reopens the body at r.off after cause broke it.
func (r *resumingBody) resume(cause error) error {
	_ = r.body.Close() // already broken; cause is what went wrong
	if !r.ranges || r.size < 0 {
		return fmt.Errorf("read %s at byte %d: %w (the server does not support resuming)", r.url, r.off, cause)
	}
	last := cause
	for attempt := 0; attempt < r.retries; attempt++ {
		if err := sleep(r.ctx, r.backoff<<attempt); err != nil {
			return err
		}
		req, err := r.newReq(r.ctx)
		if err != nil {
			return err
		}
		req.Header.Set("Range", "bytes="+strconv.FormatInt(r.off, 10)+"-")
		if r.valid != "" {
			req.Header.Set("If-Range", r.valid)
		}
		resp, err := r.do(req)
		if err != nil {
			if ref, ok := egress.AsRefused(err); ok {
				return &PermanentError{Err: ref}
			}
			last = err
			continue
		}
		if resp.StatusCode != http.StatusPartialContent {
			_ = resp.Body.Close() // not the range asked for, not read
			if resp.StatusCode == http.StatusOK {
				return permanent("resume %s at byte %d: the file changed on the server", r.url, r.off)
			}
			last = fmt.Errorf("resume %s at byte %d: server answered %s", r.url, r.off, resp.Status)
			continue
		}
		if why := partialMismatch(resp, r.off, r.size, r.valid); why != "" {
			_ = resp.Body.Close() // the wrong range, not read
			return permanent("resume %s at byte %d: %s", r.url, r.off, why)
		}
		r.body = resp.Body
		r.resumes++
		r.log.Info("resumed download", "url", r.url, "offset", r.off, "resumes", r.resumes, "cause", cause.Error())
		return nil
	}
	return fmt.Errorf("read %s at byte %d: %w", r.url, r.off, last)
}

func (r *resumingBody) Close() error {
	if r.watchdog != nil {
		r.watchdog.Stop()
	}
	if r.cancel != nil {
		r.cancel()
	}
	return r.body.Close()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Permanent marks the error as not worth retrying, for the driver.
func (e *PermanentError) Permanent() bool { return true }
