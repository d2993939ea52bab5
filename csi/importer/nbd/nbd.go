// Package nbd serves one read-only export over the NBD protocol (fixed newstyle handshake,
// NBD_OPT_GO/NBD_OPT_INFO, simple replies, NBD_CMD_READ and NBD_CMD_DISC) to one client on an
// already connected stream, such as one end of a socketpair handed to qemu-img. Everything
// else is refused. Every length the client sends is bounded before it is read or allocated.
package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Export is what the client may read.
type Export struct {
	Size int64
	// ReadAt fills p with the bytes at off; off+len(p) <= Size. An error is sent to the
	// client as EIO and the connection goes on.
	ReadAt func(p []byte, off int64) error
}

const (
	// MaxRead is the largest read served, announced as the maximum block size.
	MaxRead = 4 << 20
	// maxOption bounds an option's data: an export name (at most 4096 bytes by the
	// protocol), its length and a few information requests.
	maxOption = 8 << 10
	// maxOptions bounds the options one handshake may send.
	maxOptions = 32

	magicNBD       = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt       = 0x49484156454f5054 // "IHAVEOPT"
	magicRep       = 0x0003e889045565a9
	magicRequest   = 0x25609513
	magicReply     = 0x67446698
	flagFixed      = 1 << 0
	flagNoZeroes   = 1 << 1
	optExportName  = 1
	optAbort       = 2
	optInfo        = 6
	optGo          = 7
	repAck         = 1
	repInfo        = 3
	repErrUnsup    = 1<<31 + 1
	repErrInvalid  = 1<<31 + 3
	repErrUnknown  = 1<<31 + 6
	infoExport     = 0
	infoBlockSize  = 3
	tflagHasFlags  = 1 << 0
	tflagReadOnly  = 1 << 1
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	errEIO         = 5
	errEINVAL      = 22
	errEOVERFLOW   = 75
	requestHdrSize = 28
)

// ErrProtocol is a client that broke the protocol; the connection is closed.
var ErrProtocol = errors.New("nbd: protocol violation")

func violation(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// Serve runs the handshake and then answers requests until the client disconnects (nil) or
// breaks the protocol. The caller closes conn.
func Serve(conn io.ReadWriter, exp Export) error {
	ok, err := handshake(conn, exp)
	if err != nil || !ok {
		return err
	}
	return transmit(conn, exp)
}

// handshake negotiates until NBD_OPT_GO succeeds (true) or the client aborts (false).
func handshake(conn io.ReadWriter, exp Export) (bool, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixed|flagNoZeroes)
	if _, err := conn.Write(hello[:]); err != nil {
		return false, fmt.Errorf("nbd: send greeting: %w", err)
	}
	var cflags [4]byte
	if _, err := io.ReadFull(conn, cflags[:]); err != nil {
		return false, fmt.Errorf("nbd: read client flags: %w", err)
	}
	if f := binary.BigEndian.Uint32(cflags[:]); f&flagFixed == 0 || f&^uint32(flagFixed|flagNoZeroes) != 0 {
		return false, violation("client flags %#x", f)
	}
	data := make([]byte, maxOption)
	for n := 0; n < maxOptions; n++ {
		var hdr [16]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return false, fmt.Errorf("nbd: read option: %w", err)
		}
		if binary.BigEndian.Uint64(hdr[0:]) != magicOpt {
			return false, violation("bad option magic")
		}
		opt, length := binary.BigEndian.Uint32(hdr[8:]), binary.BigEndian.Uint32(hdr[12:])
		if length > maxOption {
			return false, violation("option %d of %d bytes", opt, length)
		}
		if _, err := io.ReadFull(conn, data[:length]); err != nil {
			return false, fmt.Errorf("nbd: read option data: %w", err)
		}
		switch opt {
		case optExportName:
			// It cannot be refused with a reply: the protocol ends the connection instead.
			return false, violation("NBD_OPT_EXPORT_NAME is not served")
		case optAbort:
			return false, optReply(conn, opt, repAck, nil)
		case optInfo, optGo:
			done, err := info(conn, opt, data[:length], exp)
			if err != nil || done {
				return done, err
			}
		default:
			if err := optReply(conn, opt, repErrUnsup, nil); err != nil {
				return false, err
			}
		}
	}
	return false, violation("more than %d options", maxOptions)
}

// info answers NBD_OPT_INFO or NBD_OPT_GO; done says transmission begins.
func info(conn io.Writer, opt uint32, data []byte, exp Export) (done bool, err error) {
	if len(data) < 6 {
		return false, optReply(conn, opt, repErrInvalid, nil)
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen)+6 > uint64(len(data)) {
		return false, optReply(conn, opt, repErrInvalid, nil)
	}
	rest := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*nreq {
		return false, optReply(conn, opt, repErrInvalid, nil)
	}
	if nameLen != 0 {
		return false, optReply(conn, opt, repErrUnknown, nil)
	}
	var ex [12]byte
	binary.BigEndian.PutUint16(ex[0:], infoExport)
	binary.BigEndian.PutUint64(ex[2:], uint64(exp.Size))
	binary.BigEndian.PutUint16(ex[10:], tflagHasFlags|tflagReadOnly)
	if err := optReply(conn, opt, repInfo, ex[:]); err != nil {
		return false, err
	}
	for i := 0; i < nreq; i++ {
		if binary.BigEndian.Uint16(rest[2+2*i:]) != infoBlockSize {
			continue
		}
		var bs [14]byte
		binary.BigEndian.PutUint16(bs[0:], infoBlockSize)
		binary.BigEndian.PutUint32(bs[2:], 1)
		binary.BigEndian.PutUint32(bs[6:], 4096)
		binary.BigEndian.PutUint32(bs[10:], MaxRead)
		if err := optReply(conn, opt, repInfo, bs[:]); err != nil {
			return false, err
		}
		break
	}
	return opt == optGo, optReply(conn, opt, repAck, nil)
}

func optReply(conn io.Writer, opt, typ uint32, data []byte) error {
	b := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(b[0:], magicRep)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	if _, err := conn.Write(append(b, data...)); err != nil {
		return fmt.Errorf("nbd: send option reply: %w", err)
	}
	return nil
}

// transmit answers requests one at a time, in order.
func transmit(conn io.ReadWriter, exp Export) error {
	var buf []byte
	for {
		var req [requestHdrSize]byte
		if _, err := io.ReadFull(conn, req[:]); err != nil {
			return fmt.Errorf("nbd: read request: %w", err)
		}
		if binary.BigEndian.Uint32(req[0:]) != magicRequest {
			return violation("bad request magic")
		}
		typ := binary.BigEndian.Uint16(req[6:])
		handle := req[8:16]
		off, length := binary.BigEndian.Uint64(req[16:]), binary.BigEndian.Uint32(req[24:])
		switch typ {
		case cmdDisc:
			return nil
		case cmdWrite:
			// Its payload follows; the export is read-only and the client was told so.
			return violation("write to a read-only export")
		case cmdRead:
		default:
			if err := reply(conn, handle, errEINVAL, nil); err != nil {
				return err
			}
			continue
		}
		switch {
		case length == 0 || off > uint64(exp.Size) || uint64(length) > uint64(exp.Size)-off:
			if err := reply(conn, handle, errEINVAL, nil); err != nil {
				return err
			}
			continue
		case length > MaxRead:
			if err := reply(conn, handle, errEOVERFLOW, nil); err != nil {
				return err
			}
			continue
		}
		if cap(buf) < 16+int(length) {
			buf = make([]byte, 16+MaxRead)
		}
		b := buf[:16+length]
		if err := exp.ReadAt(b[16:], int64(off)); err != nil {
			if err := reply(conn, handle, errEIO, nil); err != nil {
				return err
			}
			continue
		}
		if err := reply(conn, handle, 0, b); err != nil {
			return err
		}
	}
}

// reply sends a simple reply; b, when given, has 16 bytes of room for the header before the data.
func reply(conn io.Writer, handle []byte, errno uint32, b []byte) error {
	if b == nil {
		b = make([]byte, 16)
	}
	binary.BigEndian.PutUint32(b[0:], magicReply)
	binary.BigEndian.PutUint32(b[4:], errno)
	copy(b[8:16], handle)
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("nbd: send reply: %w", err)
	}
	return nil
}
