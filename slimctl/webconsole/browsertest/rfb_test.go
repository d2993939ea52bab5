package browsertest

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// rfbServer plays a scripted RFB server on one end of a pipe: it sends version, security
// types, result, server init for w x h, reads the client's messages and then sends updates.
func rfbServer(t *testing.T, version string, secTypes []byte, w, h uint16, updates ...[]byte) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		defer server.Close()
		_, _ = io.WriteString(server, version)
		buf := make([]byte, 12)
		if _, err := io.ReadFull(server, buf); err != nil {
			return
		}
		_, _ = server.Write(append([]byte{byte(len(secTypes))}, secTypes...))
		if _, err := io.ReadFull(server, buf[:1]); err != nil {
			return
		}
		_, _ = server.Write([]byte{0, 0, 0, 0})
		if _, err := io.ReadFull(server, buf[:1]); err != nil { // ClientInit
			return
		}
		init := make([]byte, 24)
		binary.BigEndian.PutUint16(init[0:], w)
		binary.BigEndian.PutUint16(init[2:], h)
		binary.BigEndian.PutUint32(init[20:], 4)
		_, _ = server.Write(append(init, "test"...))
		// SetPixelFormat (20), SetEncodings (8), FramebufferUpdateRequest (10).
		if _, err := io.ReadFull(server, make([]byte, 38)); err != nil {
			return
		}
		for _, u := range updates {
			if _, err := server.Write(u); err != nil {
				return
			}
		}
	}()
	return client
}

// update builds a FramebufferUpdate of one rectangle in encoding enc with pixels in B, G, R, X.
func update(x, y, w, h uint16, enc int32, pixels []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0, 1})
	_ = binary.Write(&b, binary.BigEndian, []uint16{x, y, w, h})
	_ = binary.Write(&b, binary.BigEndian, enc)
	b.Write(pixels)
	return b.Bytes()
}

func TestReadFramebuffer(t *testing.T) {
	// A 2x2 screen in two updates (rows), with a bell between them.
	row0 := []byte{0, 0, 255, 0, 0, 255, 0, 0} // red, green
	row1 := []byte{255, 0, 0, 0, 1, 2, 3, 0}   // blue, (3,2,1)
	conn := rfbServer(t, "RFB 003.008\n", []byte{2, 1}, 2, 2,
		update(0, 0, 2, 1, 0, row0), []byte{2}, update(0, 1, 2, 1, 0, row1))
	img, err := ReadFramebuffer(conn)
	if err != nil {
		t.Fatal(err)
	}
	want := map[image.Point]color.RGBA{
		{0, 0}: {255, 0, 0, 255}, {1, 0}: {0, 255, 0, 255},
		{0, 1}: {0, 0, 255, 255}, {1, 1}: {3, 2, 1, 255},
	}
	for p, c := range want {
		if got := img.At(p.X, p.Y); got != c {
			t.Errorf("pixel %v = %v, want %v", p, got, c)
		}
	}
	if Blank(img) {
		t.Error("Blank says a four-colour image is blank")
	}
}

// TestReadFramebufferRefuses: hostile or unexpected servers get an error, not a hang or a
// huge allocation.
func TestReadFramebufferRefuses(t *testing.T) {
	tests := []struct {
		name     string
		version  string
		sec      []byte
		w, h     uint16
		updates  [][]byte
		contains string
	}{
		{"not RFB", "HTTP/1.1 200\n", []byte{1}, 1, 1, nil, "not an RFB server"},
		{"old version", "RFB 003.003\n", []byte{1}, 1, 1, nil, "older than 3.8"},
		{"password only", "RFB 003.008\n", []byte{2}, 1, 1, nil, "not None"},
		{"too wide", "RFB 003.008\n", []byte{1}, 9000, 10, nil, "out of bounds"},
		{"empty", "RFB 003.008\n", []byte{1}, 0, 10, nil, "out of bounds"},
		{"outside", "RFB 003.008\n", []byte{1}, 2, 2, [][]byte{update(1, 1, 2, 2, 0, make([]byte, 16))}, "outside"},
		{"not raw", "RFB 003.008\n", []byte{1}, 2, 2, [][]byte{update(0, 0, 2, 2, 16, nil)}, "encoding 16"},
		{"unknown message", "RFB 003.008\n", []byte{1}, 2, 2, [][]byte{{9}}, "message type 9"},
		{"short pixels", "RFB 003.008\n", []byte{1}, 2, 2, [][]byte{update(0, 0, 2, 2, 0, make([]byte, 5))}, "pixels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := rfbServer(t, tt.version, tt.sec, tt.w, tt.h, tt.updates...)
			_, err := ReadFramebuffer(conn)
			if err == nil || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("ReadFramebuffer: %v, want an error with %q", err, tt.contains)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	a := image.NewRGBA(image.Rect(0, 0, 10, 10))
	b := image.NewRGBA(image.Rect(0, 0, 10, 10))
	b.Set(0, 0, color.RGBA{10, 0, 0, 255})
	b.Set(1, 0, color.RGBA{3, 3, 3, 255})
	if f, err := Match(a, b, 0); err != nil || f != 0.98 {
		t.Errorf("Match tolerance 0 = %v, %v; want 0.98", f, err)
	}
	if f, err := Match(a, b, 4); err != nil || f != 0.99 {
		t.Errorf("Match tolerance 4 = %v, %v; want 0.99", f, err)
	}
	if _, err := Match(a, image.NewRGBA(image.Rect(0, 0, 10, 9)), 0); err == nil {
		t.Error("Match accepted images of different sizes")
	}
	if !Blank(a) {
		t.Error("Blank says a black image is not")
	}
}
