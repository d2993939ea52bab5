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
			resp.Body.Close()
			last = fmt.Errorf("GET %s: server answered %s", r.url, resp.Status)
			if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
				continue
			}
			return &PermanentError{Err: last}
		}
		r.body = resp.Body
		r.size = resp.ContentLength
		r.ranges = strings.Contains(resp.Header.Get("Accept-Ranges"), "bytes")
		r.valid = resp.Header.Get("ETag")
		if r.valid == "" || strings.HasPrefix(r.valid, "W/") {
			r.valid = resp.Header.Get("Last-Modified")
		}
		return nil
	}
	return last
}

func (r *resumingBody) Read(p []byte) (int, error) {
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
	r.body.Close()
	if !r.ranges || r.size < 0 {
		return fmt.Errorf("read %s at byte %d: %w (the server does not support resuming)", r.url, r.off, cause)
	}
	var last error = cause
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
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return permanent("resume %s at byte %d: the file changed on the server", r.url, r.off)
			}
			last = fmt.Errorf("resume %s at byte %d: server answered %s", r.url, r.off, resp.Status)
			continue
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(r.off, 10)+"-") {
			resp.Body.Close()
			return permanent("resume %s: server sent range %q, asked from %d", r.url, resp.Header.Get("Content-Range"), r.off)
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
