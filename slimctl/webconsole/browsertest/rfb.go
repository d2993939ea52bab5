package browsertest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"
	"slices"
)

// MaxFramebufferSide bounds the framebuffer ReadFramebuffer accepts in each dimension.
const MaxFramebufferSide = 8192

// ReadFramebuffer reads one whole screen from an RFB (VNC) server that asks for no
// authentication: RFB 3.8 handshake, security None, a shared session, 32 bits per pixel, Raw
// encoding only, and one non-incremental update request for the whole framebuffer. The server's
// bytes are not trusted: sizes are bounded, and anything else than what was asked for is refused.
// A server that never finishes the update blocks the read: give conn a deadline.
func ReadFramebuffer(conn io.ReadWriter) (image.Image, error) {
	w, h, err := rfbHandshake(conn)
	if err != nil {
		return nil, err
	}
	// SetPixelFormat: 32 bpp, depth 24, little endian, true colour, 8 bits each, red at 16,
	// green at 8, blue at 0 (so a pixel reads B, G, R, X).
	setPF := []byte{0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0}
	// SetEncodings: Raw only.
	setEnc := []byte{2, 0, 0, 1, 0, 0, 0, 0}
	// FramebufferUpdateRequest: not incremental, the whole screen.
	req := []byte{3, 0, 0, 0, 0, 0, byte(w >> 8), byte(w), byte(h >> 8), byte(h)}
	if _, err := conn.Write(append(append(setPF, setEnc...), req...)); err != nil {
		return nil, fmt.Errorf("send RFB requests: %w", err)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	covered := 0
	for covered < w*h {
		n, err := readUpdate(conn, img, &covered)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			covered = w * h // an empty update: the server has nothing more to say
		}
	}
	return img, nil
}

// rfbHandshake runs the protocol version, security and init messages and returns the
// framebuffer's size.
func rfbHandshake(conn io.ReadWriter) (w, h int, err error) {
	var version [12]byte
	if _, err := io.ReadFull(conn, version[:]); err != nil {
		return 0, 0, fmt.Errorf("read RFB version: %w", err)
	}
	if string(version[:4]) != "RFB " || version[11] != '\n' {
		return 0, 0, fmt.Errorf("not an RFB server: %q", version[:])
	}
	if string(version[:]) < "RFB 003.008\n" {
		return 0, 0, fmt.Errorf("RFB version %q is older than 3.8", version[:11])
	}
	if _, err := io.WriteString(conn, "RFB 003.008\n"); err != nil {
		return 0, 0, fmt.Errorf("send RFB version: %w", err)
	}
	var n [1]byte
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		return 0, 0, fmt.Errorf("read RFB security types: %w", err)
	}
	if n[0] == 0 {
		return 0, 0, errors.New("RFB server refused the connection")
	}
	types := make([]byte, n[0])
	if _, err := io.ReadFull(conn, types); err != nil {
		return 0, 0, fmt.Errorf("read RFB security types: %w", err)
	}
	if !slices.Contains(types, 1) {
		return 0, 0, fmt.Errorf("RFB server offers security types %v, not None (1)", types)
	}
	// Choose None, expect SecurityResult OK, send ClientInit shared=1.
	if _, err := conn.Write([]byte{1}); err != nil {
		return 0, 0, fmt.Errorf("choose RFB security: %w", err)
	}
	var result [4]byte
	if _, err := io.ReadFull(conn, result[:]); err != nil {
		return 0, 0, fmt.Errorf("read RFB security result: %w", err)
	}
	if r := binary.BigEndian.Uint32(result[:]); r != 0 {
		return 0, 0, fmt.Errorf("RFB security result %d", r)
	}
	if _, err := conn.Write([]byte{1}); err != nil {
		return 0, 0, fmt.Errorf("send RFB client init: %w", err)
	}
	var init [24]byte // width, height, pixel format (16), name length
	if _, err := io.ReadFull(conn, init[:]); err != nil {
		return 0, 0, fmt.Errorf("read RFB server init: %w", err)
	}
	w, h = int(binary.BigEndian.Uint16(init[0:])), int(binary.BigEndian.Uint16(init[2:]))
	if w == 0 || h == 0 || w > MaxFramebufferSide || h > MaxFramebufferSide {
		return 0, 0, fmt.Errorf("RFB framebuffer %dx%d out of bounds", w, h)
	}
	nameLen := binary.BigEndian.Uint32(init[20:])
	if nameLen > 4096 {
		return 0, 0, fmt.Errorf("RFB desktop name of %d bytes", nameLen)
	}
	if _, err := io.CopyN(io.Discard, conn, int64(nameLen)); err != nil {
		return 0, 0, fmt.Errorf("read RFB desktop name: %w", err)
	}
	return w, h, nil
}

// readUpdate reads server messages up to and including one FramebufferUpdate, drawing its
// rectangles into img and adding their areas to covered. It returns the rectangle count.
func readUpdate(conn io.Reader, img *image.RGBA, covered *int) (int, error) {
	for {
		var typ [1]byte
		if _, err := io.ReadFull(conn, typ[:]); err != nil {
			return 0, fmt.Errorf("read RFB message: %w", err)
		}
		switch typ[0] {
		case 0: // FramebufferUpdate
		case 2: // Bell
			continue
		case 3: // ServerCutText: padding, length, text
			var cut [7]byte
			if _, err := io.ReadFull(conn, cut[:]); err != nil {
				return 0, fmt.Errorf("read RFB cut text: %w", err)
			}
			n := binary.BigEndian.Uint32(cut[3:])
			if n > 1<<20 {
				return 0, fmt.Errorf("RFB cut text of %d bytes", n)
			}
			if _, err := io.CopyN(io.Discard, conn, int64(n)); err != nil {
				return 0, fmt.Errorf("read RFB cut text: %w", err)
			}
			continue
		default:
			return 0, fmt.Errorf("unexpected RFB message type %d", typ[0])
		}
		var hdr [3]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return 0, fmt.Errorf("read RFB update: %w", err)
		}
		n := int(binary.BigEndian.Uint16(hdr[1:]))
		for range n {
			area, err := readRect(conn, img)
			if err != nil {
				return 0, err
			}
			*covered += area
		}
		return n, nil
	}
}

func readRect(conn io.Reader, img *image.RGBA) (int, error) {
	var rh [12]byte
	if _, err := io.ReadFull(conn, rh[:]); err != nil {
		return 0, fmt.Errorf("read RFB rectangle: %w", err)
	}
	x, y := int(binary.BigEndian.Uint16(rh[0:])), int(binary.BigEndian.Uint16(rh[2:]))
	w, h := int(binary.BigEndian.Uint16(rh[4:])), int(binary.BigEndian.Uint16(rh[6:]))
	if enc := int32(binary.BigEndian.Uint32(rh[8:])); enc != 0 {
		return 0, fmt.Errorf("RFB rectangle in encoding %d, asked for Raw only", enc)
	}
	if r := image.Rect(x, y, x+w, y+h); !r.In(img.Rect) {
		return 0, fmt.Errorf("RFB rectangle %v outside the framebuffer %v", r, img.Rect)
	}
	row := make([]byte, 4*w)
	for j := range h {
		if _, err := io.ReadFull(conn, row); err != nil {
			return 0, fmt.Errorf("read RFB pixels: %w", err)
		}
		off := img.PixOffset(x, y+j)
		for i := range w {
			p := img.Pix[off+4*i : off+4*i+4]
			p[0], p[1], p[2], p[3] = row[4*i+2], row[4*i+1], row[4*i], 255
		}
	}
	return w * h, nil
}
