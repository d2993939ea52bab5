package iso9660

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// readISO is a minimal ISO 9660 reader: it walks the tree from the primary descriptor the way
// Linux's isofs does and returns the label and the files by lower-cased path.
func readISO(t *testing.T, img []byte, jolietTree bool) (string, map[string]string) {
	t.Helper()
	pvd := img[16*sector:]
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		t.Fatal("no primary volume descriptor")
	}
	decode := func(b []byte) string { return string(b) }
	if jolietTree {
		pvd = img[17*sector:]
		if pvd[0] != 2 || string(pvd[1:6]) != "CD001" || string(pvd[88:91]) != "%/E" {
			t.Fatal("no Joliet descriptor")
		}
		decode = func(b []byte) string {
			var r []rune
			for i := 0; i+1 < len(b); i += 2 {
				r = append(r, rune(b[i])<<8|rune(b[i+1]))
			}
			return string(r)
		}
	}
	if term := img[18*sector:]; term[0] != 255 {
		t.Fatal("no descriptor set terminator")
	}
	if got := binary.LittleEndian.Uint32(pvd[80:]); int(got)*sector != len(img) {
		t.Fatalf("volume space %d sectors, image %d bytes", got, len(img))
	}
	if be := binary.BigEndian.Uint32(pvd[84:]); be != binary.LittleEndian.Uint32(pvd[80:]) {
		t.Fatal("both-endian fields disagree")
	}
	label := strings.TrimRight(decode(pvd[40:72]), " ")
	files := map[string]string{}
	var walk func(extent uint32, prefix string)
	walk = func(extent uint32, prefix string) {
		d := img[int(extent)*sector : int(extent+1)*sector]
		for off := 0; off < len(d) && d[off] != 0; off += int(d[off]) {
			r := d[off:]
			idLen := int(r[32])
			raw := r[33 : 33+idLen]
			if idLen == 1 && raw[0] <= 1 {
				continue
			}
			ext := binary.LittleEndian.Uint32(r[2:])
			size := binary.LittleEndian.Uint32(r[10:])
			name := strings.TrimSuffix(decode(raw), ";1")
			if !jolietTree {
				name = strings.ToLower(strings.TrimSuffix(name, "."))
			}
			if r[25]&2 != 0 {
				walk(ext, prefix+name+"/")
				continue
			}
			files[prefix+name] = string(img[int(ext)*sector : int(ext)*sector+int(size)])
		}
	}
	root := pvd[156:]
	walk(binary.LittleEndian.Uint32(root[2:]), "")
	return label, files
}

func TestWriteReadBack(t *testing.T) {
	big := strings.Repeat("x", 5000) // spans sectors
	files := []File{
		{Path: "user-data", Data: []byte("#cloud-config\n")},
		{Path: "meta-data", Data: []byte("instance-id: a\n")},
		{Path: "openstack/latest/meta_data.json", Data: []byte(`{"uuid":"u"}`)},
		{Path: "openstack/latest/user_data", Data: []byte(big)},
		{Path: "openstack/content/0000", Data: []byte("c")},
		{Path: "empty", Data: nil},
		{Path: "MixedCase.txt", Data: []byte("m")},
	}
	var buf bytes.Buffer
	if err := Write(&buf, "config-2", files, time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	for _, tree := range []struct {
		name   string
		joliet bool
	}{{"ISO 9660", false}, {"Joliet", true}} {
		label, got := readISO(t, buf.Bytes(), tree.joliet)
		if label != "config-2" {
			t.Errorf("%s: label %q", tree.name, label)
		}
		if len(got) != len(files) {
			t.Errorf("%s: read %d files, wrote %d: %v", tree.name, len(got), len(files), got)
		}
		for _, f := range files {
			name := f.Path
			if !tree.joliet { // Linux shows plain ISO 9660 names in lower case
				name = strings.ToLower(name)
			}
			if got[name] != string(f.Data) {
				t.Errorf("%s: %s: read %d bytes, wrote %d", tree.name, name, len(got[name]), len(f.Data))
			}
		}
	}
}

func TestRejects(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, strings.Repeat("l", 33), nil, time.Now()); err == nil {
		t.Error("a 33-byte label was accepted")
	}
	if err := Write(&buf, "x", []File{{Path: strings.Repeat("n", 40)}}, time.Now()); err == nil {
		t.Error("a 40-character name was accepted")
	}
}
