package importer

import (
	"net/http"
	"testing"
)

// FuzzRangeMismatch: whatever a server puts in a 206's Content-Range, Content-Length and
// validator, the answer is taken only when it is exactly bytes first..last of the size-byte
// file under the validator asked for.
func FuzzRangeMismatch(f *testing.F) {
	f.Add("bytes 2097152-3145727/8716288", int64(1048576), `"v1"`, int64(2097152), int64(3145727), int64(8716288))
	f.Add("bytes 0-0/1", int64(-1), "", int64(0), int64(0), int64(1))
	f.Add("bytes */8716288", int64(0), `"v2"`, int64(0), int64(9), int64(10))
	f.Add("bytes 5-4/10", int64(0), `W/"v1"`, int64(5), int64(4), int64(10))
	f.Add("bytes 00000000000000000001-2/9223372036854775807", int64(2), `"v1"`, int64(1), int64(2), int64(9223372036854775807))
	f.Fuzz(func(t *testing.T, contentRange string, length int64, etag string, first, last, size int64) {
		resp := &http.Response{Header: http.Header{}, ContentLength: length}
		resp.Header.Set("Content-Range", contentRange)
		resp.Header.Set("ETag", etag)
		if rangeMismatch(resp, first, last, size, `"v1"`) != "" {
			return
		}
		a, b, total, err := parseContentRange(contentRange)
		if err != nil || a != first || b != last || total != size || a < 0 || a > b || b >= total {
			t.Fatalf("accepted %q for bytes %d-%d/%d", contentRange, first, last, size)
		}
		if length >= 0 && length != last-first+1 {
			t.Fatalf("accepted Content-Length %d for bytes %d-%d", length, first, last)
		}
		if v := validator(resp.Header); v != "" && v != `"v1"` {
			t.Fatalf("accepted validator %q", v)
		}
	})
}
