package importer

import (
	"context"
	"log/slog"
	"os"

	"github.com/slimvirt/slimvirt/csi/importer/nbd"
)

// QemuInfo lets the tests run qemu-img info on a staged file as the importer does.
func QemuInfo(ctx context.Context, f *os.File) (imageInfo, error) {
	return qemuInfo(ctx, stagedFile{f})
}

// QemuInfoOverNBD runs qemu-img info on img served as the streaming path serves it.
func QemuInfoOverNBD(ctx context.Context, img []byte) (imageInfo, error) {
	return qemuInfo(ctx, &nbdExport{export: nbd.Export{Size: int64(len(img)), ReadAt: func(p []byte, off int64) error {
		copy(p, img[off:])
		return nil
	}}, log: slog.Default()})
}
