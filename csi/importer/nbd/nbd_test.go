package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"
)

const exportSize = 8 << 20

// conn is a client that has sent in and reads what the server wrote into out.
type conn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *conn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *conn) Write(p []byte) (int, error) { return c.out.Write(p) }

// client builds what a client sends.
type client struct{ bytes.Buffer }

func (c *client) u16(v uint16) *client { _ = binary.Write(c, binary.BigEndian, v); return c }
func (c *client) u32(v uint32) *client { _ = binary.Write(c, binary.BigEndian, v); return c }
func (c *client) u64(v uint64) *client { _ = binary.Write(c, binary.BigEndian, v); return c }

func (c *client) option(opt uint32, data []byte) *client {
	c.u64(magicOpt).u32(opt).u32(uint32(len(data)))
	c.Write(data)
	return c
}

func goData(name string, infos ...uint16) []byte {
	var d client
	d.u32(uint32(len(name)))
	d.WriteString(name)
	d.u16(uint16(len(infos)))
	for _, i := range infos {
		d.u16(i)
	}
	return d.Bytes()
}

func (c *client) request(typ uint16, handle, off uint64, length uint32) *client {
	return c.u32(magicRequest).u16(0).u16(typ).u64(handle).u64(off).u32(length)
}

// pattern is the export's content: each byte is its offset mod 251.
func pattern(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > exportSize || len(p) > MaxRead {
		return fmt.Errorf("read %d bytes at %d outside the export", len(p), off)
	}
	for i := range p {
		p[i] = byte((off + int64(i)) % 251)
	}
	return nil
}

func serve(t *testing.T, c *client) (*bytes.Reader, error) {
	t.Helper()
	cn := &conn{in: bytes.NewReader(c.Bytes())}
	err := Serve(cn, Export{Size: exportSize, ReadAt: pattern})
	out := bytes.NewReader(cn.out.Bytes())
	var hello [18]byte
	if _, rerr := io.ReadFull(out, hello[:]); rerr != nil || binary.BigEndian.Uint64(hello[:]) != magicNBD ||
		binary.BigEndian.Uint64(hello[8:]) != magicOpt || binary.BigEndian.Uint16(hello[16:]) != flagFixed|flagNoZeroes {
		t.Fatalf("greeting %x", hello)
	}
	return out, err
}

// optReplies reads option replies until an ACK or an error reply: their types and data.
func optReplies(t *testing.T, out *bytes.Reader) (types []uint32, data [][]byte) {
	t.Helper()
	for {
		var h [20]byte
		if _, err := io.ReadFull(out, h[:]); err != nil {
			t.Fatalf("option reply: %v", err)
		}
		if binary.BigEndian.Uint64(h[:]) != magicRep {
			t.Fatalf("option reply magic %x", h[:8])
		}
		d := make([]byte, binary.BigEndian.Uint32(h[16:]))
		_, _ = io.ReadFull(out, d)
		typ := binary.BigEndian.Uint32(h[12:])
		types, data = append(types, typ), append(data, d)
		if typ != repInfo {
			return types, data
		}
	}
}

func simpleReply(t *testing.T, out *bytes.Reader, handle uint64) uint32 {
	t.Helper()
	var h [16]byte
	if _, err := io.ReadFull(out, h[:]); err != nil {
		t.Fatalf("reply: %v", err)
	}
	if binary.BigEndian.Uint32(h[:]) != magicReply || binary.BigEndian.Uint64(h[8:]) != handle {
		t.Fatalf("reply header %x for handle %d", h, handle)
	}
	return binary.BigEndian.Uint32(h[4:])
}

// TestServe: what qemu's client does (structured replies asked and refused, NBD_OPT_GO with the
// block size), reads in and out of bounds, commands that are refused.
func TestServe(t *testing.T) {
	c := &client{}
	c.u32(flagFixed | flagNoZeroes)
	c.option(8, nil) // NBD_OPT_STRUCTURED_REPLY
	c.option(optInfo, goData("other"))
	c.option(optGo, goData("", infoBlockSize))
	c.request(cmdRead, 1, 4095, 70000)
	c.request(cmdRead, 2, exportSize-10, 11)
	c.request(cmdRead, 3, 0, MaxRead+1)
	c.request(cmdRead, 4, 0, 0)
	c.request(3, 5, 0, 0) // NBD_CMD_FLUSH, not announced
	c.request(cmdRead, 6, exportSize-10, 10)
	c.request(cmdDisc, 7, 0, 0)
	out, err := serve(t, c)
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	if types, _ := optReplies(t, out); len(types) != 1 || types[0] != repErrUnsup {
		t.Fatalf("structured replies: %x, want refused", types)
	}
	if types, _ := optReplies(t, out); len(types) != 1 || types[0] != repErrUnknown {
		t.Fatalf("another export name: %x, want unknown", types)
	}
	types, data := optReplies(t, out)
	if len(types) != 3 || types[2] != repAck {
		t.Fatalf("NBD_OPT_GO replies %x", types)
	}
	if len(data[0]) != 12 || binary.BigEndian.Uint64(data[0][2:]) != exportSize || binary.BigEndian.Uint16(data[0][10:]) != tflagHasFlags|tflagReadOnly {
		t.Fatalf("export info %x", data[0])
	}
	if len(data[1]) != 14 || binary.BigEndian.Uint32(data[1][10:]) != MaxRead {
		t.Fatalf("block size info %x", data[1])
	}
	if e := simpleReply(t, out, 1); e != 0 {
		t.Fatalf("read: error %d", e)
	}
	got, want := make([]byte, 70000), make([]byte, 70000)
	_, _ = io.ReadFull(out, got)
	_ = pattern(want, 4095)
	if !bytes.Equal(got, want) {
		t.Fatal("read returned other bytes")
	}
	for _, r := range []struct {
		handle uint64
		errno  uint32
	}{{2, errEINVAL}, {3, errEOVERFLOW}, {4, errEINVAL}, {5, errEINVAL}} {
		if e := simpleReply(t, out, r.handle); e != r.errno {
			t.Fatalf("request %d: error %d, want %d", r.handle, e, r.errno)
		}
	}
	if e := simpleReply(t, out, 6); e != 0 {
		t.Fatalf("read of the last bytes: error %d", e)
	}
	if _, _ = io.ReadFull(out, make([]byte, 10)); out.Len() != 0 {
		t.Fatalf("%d bytes after the last reply", out.Len())
	}
}

// TestServeRefuses: clients that break the protocol or ask for what is not served are cut off.
func TestServeRefuses(t *testing.T) {
	start := func() *client {
		c := &client{}
		c.u32(flagFixed | flagNoZeroes)
		return c
	}
	started := func() *client { c := start(); c.option(optGo, goData("")); return c }
	tests := map[string]*client{
		"old-style client flags":    (&client{}).u32(0),
		"unknown client flags":      (&client{}).u32(flagFixed | 1<<7),
		"NBD_OPT_EXPORT_NAME":       start().option(optExportName, nil),
		"option longer than bound":  start().u64(magicOpt).u32(optGo).u32(maxOption + 1),
		"bad option magic":          start().u64(1).u32(optGo).u32(0),
		"write to read-only export": started().request(cmdWrite, 1, 0, 512),
		"bad request magic":         started().u32(1).u16(0).u16(cmdRead).u64(1).u64(0).u32(512),
	}
	many := start()
	for i := 0; i <= maxOptions; i++ {
		many.option(99, nil)
	}
	tests["too many options"] = many
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := serve(t, c); !errors.Is(err, ErrProtocol) {
				t.Fatalf("serve: %v, want a protocol violation", err)
			}
		})
	}
}

// FuzzServe: whatever a client sends, the server reads only within the export and within
// MaxRead, never allocates by the client's word, and ends when the input ends.
func FuzzServe(f *testing.F) {
	c := &client{}
	c.u32(flagFixed | flagNoZeroes)
	c.option(8, nil)
	c.option(optGo, goData("", infoBlockSize))
	c.request(cmdRead, 1, 0, 4096)
	c.request(cmdRead, 2, exportSize-1, 2)
	c.request(cmdDisc, 3, 0, 0)
	f.Add(c.Bytes())
	f.Add(started(nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		cn := &counted{in: bytes.NewReader(in)}
		_ = Serve(cn, Export{Size: exportSize, ReadAt: func(p []byte, off int64) error {
			if err := pattern(p, off); err != nil {
				t.Fatal(err)
			}
			return nil
		}})
		// Each request of 28 bytes earns at most one reply of MaxRead.
		if limit := int64(18 + len(in)/4*20 + (len(in)/requestHdrSize)*(16+MaxRead)); cn.out > limit {
			t.Fatalf("wrote %d bytes for %d bytes of input", cn.out, len(in))
		}
	})
}

// counted is a client whose replies are only counted.
type counted struct {
	in  *bytes.Reader
	out int64
}

func (c *counted) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *counted) Write(p []byte) (int, error) { c.out += int64(len(p)); return len(p), nil }

// started is a handshake that reached transmission, followed by rest.
func started(rest []byte) []byte {
	c := &client{}
	c.u32(flagFixed)
	c.option(optGo, goData(""))
	c.Write(rest)
	return c.Bytes()
}
