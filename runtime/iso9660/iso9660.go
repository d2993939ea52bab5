// Package iso9660 writes small ISO 9660 images: enough for cloud-init's NoCloud and
// ConfigDrive data sources, which Linux and cloud-init find by volume label and read by name.
// Names are written twice: as ISO 9660 level-2 identifiers in upper case (what a reader without
// extensions sees; Linux shows them in lower case) and as Joliet names, exactly as given, which
// Linux and Windows (cloudbase-init) read when present. No Rock Ridge.
package iso9660

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

const sector = 2048

// File is one file to put on the image; Path uses "/" and may hold directories.
type File struct {
	Path string
	Data []byte
}

// Two trees share the files: the primary one with ISO 9660 names and the Joliet one with the
// names as given (UCS-2), which Linux and Windows prefer when present.
const (
	primary = iota
	joliet
)

type dir struct {
	name     [2]string // ISO 9660 and Joliet names
	parent   *dir
	dirs     []*dir
	files    []*fileEntry
	extent   [2]uint32
	number   uint16 // place in the path tables, 1-based
	children map[string]*dir
}

type fileEntry struct {
	name   [2]string
	data   []byte
	extent uint32
}

// id is a name as its tree stores it.
func id(name string, tree int) []byte {
	if tree == primary {
		return []byte(name)
	}
	b := make([]byte, 0, 2*len(name))
	for _, r := range name {
		if r > 0xffff {
			r = '_'
		}
		b = append(b, byte(r>>8), byte(r))
	}
	return b
}

// Write writes an image labelled label holding files, dated at t.
func Write(w io.Writer, label string, files []File, t time.Time) error {
	if len(label) > 16 {
		return fmt.Errorf("volume label %q is longer than 16 bytes", label)
	}
	root, err := buildTree(files)
	if err != nil {
		return err
	}
	order := pathTableOrder(root)
	next := allocate(order)
	img := make([]byte, int(next)*sector)
	for tree := primary; tree <= joliet; tree++ {
		lpt, mpt := pathTables(order, tree)
		if len(lpt) > sector {
			return fmt.Errorf("too many directories")
		}
		copy(img[(16+tree)*sector:], volumeDescriptor(tree, label, next, uint32(len(lpt)), uint32(19+2*tree), root, t))
		copy(img[(19+2*tree)*sector:], lpt)
		copy(img[(20+2*tree)*sector:], mpt)
		for _, d := range order {
			recs, err := dirRecords(d, tree, t)
			if err != nil {
				return err
			}
			copy(img[int(d.extent[tree])*sector:], recs)
		}
	}
	term := img[18*sector:]
	term[0] = 255
	copy(term[1:], "CD001")
	term[6] = 1
	for _, d := range order {
		for _, f := range d.files {
			copy(img[int(f.extent)*sector:], f.data)
		}
	}
	_, err = w.Write(img)
	return err
}

// buildTree puts the files in their directories, with their names in both trees.
func buildTree(files []File) (*dir, error) {
	root := &dir{children: map[string]*dir{}}
	for _, f := range files {
		parts := strings.Split(strings.Trim(path.Clean(f.Path), "/"), "/")
		d := root
		for _, p := range parts[:len(parts)-1] {
			c, ok := d.children[p]
			if !ok {
				c = &dir{name: [2]string{strings.ToUpper(p), p}, parent: d, children: map[string]*dir{}}
				d.children[p] = c
				d.dirs = append(d.dirs, c)
			}
			d = c
		}
		base := parts[len(parts)-1]
		name := strings.ToUpper(base)
		if !strings.Contains(name, ".") {
			name += "."
		}
		if len(name) > 30 || len(base) > 60 {
			return nil, fmt.Errorf("file name %q is too long for ISO 9660", base)
		}
		d.files = append(d.files, &fileEntry{name: [2]string{name + ";1", base + ";1"}, data: f.Data})
	}
	return root, nil
}

// pathTableOrder numbers the directories breadth-first, which is path-table order: by level,
// then parent, then name.
func pathTableOrder(root *dir) []*dir {
	var order []*dir
	queue := []*dir{root}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		sort.Slice(d.dirs, func(i, j int) bool { return d.dirs[i].name[primary] < d.dirs[j].name[primary] })
		d.number = uint16(len(order) + 1)
		order = append(order, d)
		queue = append(queue, d.dirs...)
	}
	return order
}

// allocate gives each directory and file its sectors and returns the image's size in sectors.
// Sectors: 0-15 system area, 16 primary descriptor, 17 Joliet descriptor, 18 terminator,
// 19-20 primary L and M path tables, 21-22 Joliet's, one sector per directory and tree,
// then the files.
func allocate(order []*dir) uint32 {
	next := uint32(23)
	for tree := primary; tree <= joliet; tree++ {
		for _, d := range order {
			d.extent[tree] = next
			next++
		}
	}
	for _, d := range order {
		for _, f := range d.files {
			f.extent = next
			next += uint32((len(f.data) + sector - 1) / sector)
		}
	}
	return next
}

// dirRecords is the content of a directory in one tree: ".", "..", then the entries in the
// order of their stored names.
func dirRecords(d *dir, tree int, t time.Time) ([]byte, error) {
	var b bytes.Buffer
	b.Write(dirRecord([]byte{0}, d.extent[tree], sector, true, t))
	parent := d
	if d.parent != nil {
		parent = d.parent
	}
	b.Write(dirRecord([]byte{1}, parent.extent[tree], sector, true, t))
	type rec struct {
		key []byte
		b   []byte
	}
	var recs []rec
	for _, c := range d.dirs {
		k := id(c.name[tree], tree)
		recs = append(recs, rec{k, dirRecord(k, c.extent[tree], sector, true, t)})
	}
	for _, f := range d.files {
		k := id(f.name[tree], tree)
		recs = append(recs, rec{k, dirRecord(k, f.extent, uint32(len(f.data)), false, t)})
	}
	sort.Slice(recs, func(i, j int) bool { return bytes.Compare(recs[i].key, recs[j].key) < 0 })
	for _, r := range recs {
		b.Write(r.b)
	}
	if b.Len() > sector {
		return nil, fmt.Errorf("directory %q has too many entries", d.name[joliet])
	}
	return b.Bytes(), nil
}

func both32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

func both16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b, v)
	binary.BigEndian.PutUint16(b[2:], v)
}

func dirRecord(id []byte, extent, size uint32, isDir bool, t time.Time) []byte {
	n := 33 + len(id)
	if n%2 == 1 {
		n++
	}
	r := make([]byte, n)
	r[0] = byte(n)
	both32(r[2:], extent)
	both32(r[10:], size)
	t = t.UTC()
	r[18], r[19], r[20] = byte(t.Year()-1900), byte(t.Month()), byte(t.Day())
	r[21], r[22], r[23] = byte(t.Hour()), byte(t.Minute()), byte(t.Second())
	if isDir {
		r[25] = 2
	}
	both16(r[28:], 1)
	r[32] = byte(len(id))
	copy(r[33:], id)
	return r
}

func pathTables(order []*dir, tree int) (l, m []byte) {
	for _, d := range order {
		name := []byte{0}
		parent := uint16(1)
		if d.parent != nil {
			name, parent = id(d.name[tree], tree), d.parent.number
		}
		rec := func(order binary.ByteOrder) []byte {
			r := make([]byte, 8+len(name)+len(name)%2)
			r[0] = byte(len(name))
			order.PutUint32(r[2:], d.extent[tree])
			order.PutUint16(r[6:], parent)
			copy(r[8:], name)
			return r
		}
		l = append(l, rec(binary.LittleEndian)...)
		m = append(m, rec(binary.BigEndian)...)
	}
	return l, m
}

func padded(s string, n int) []byte {
	b := bytes.Repeat([]byte{' '}, n)
	copy(b, s)
	return b
}

func decDate(t time.Time) []byte {
	return append([]byte(t.UTC().Format("20060102150405")+"00"), 0)
}

// volumeDescriptor is the primary descriptor, or Joliet's supplementary one (UCS-2 level 3).
func volumeDescriptor(tree int, label string, sectors, ptSize, ptAt uint32, root *dir, t time.Time) []byte {
	d := make([]byte, sector)
	d[0] = 1
	text := func(s string, n int) []byte { return padded(s, n) }
	if tree == joliet {
		d[0] = 2
		copy(d[88:], "%/E")
		text = func(s string, n int) []byte {
			b := id(s+strings.Repeat(" ", n/2), joliet)
			return b[:n]
		}
	}
	copy(d[1:], "CD001")
	d[6] = 1
	copy(d[8:], text("LINUX", 32))
	copy(d[40:], text(label, 32))
	both32(d[80:], sectors)
	both16(d[120:], 1)
	both16(d[124:], 1)
	both16(d[128:], sector)
	both32(d[132:], ptSize)
	binary.LittleEndian.PutUint32(d[140:], ptAt)
	binary.BigEndian.PutUint32(d[148:], ptAt+1)
	copy(d[156:], dirRecord([]byte{0}, root.extent[tree], sector, true, t))
	copy(d[190:], text("", 128))
	copy(d[318:], text("", 128))
	copy(d[446:], text("", 128))
	copy(d[574:], text("SLIMVIRT", 128))
	fileID := 37 // copyright, abstract and bibliographic file identifiers
	if tree == joliet {
		fileID = 36 // whole UCS-2 characters, the last byte left zero
	}
	copy(d[702:], text("", fileID))
	copy(d[739:], text("", fileID))
	copy(d[776:], text("", fileID))
	copy(d[813:], decDate(t))
	copy(d[830:], decDate(t))
	copy(d[847:], append(bytes.Repeat([]byte{'0'}, 16), 0))
	copy(d[864:], decDate(t))
	d[881] = 1
	return d
}
