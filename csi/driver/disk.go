package driver

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slimvirt/slimvirt/csi/diskimg"
	"github.com/slimvirt/slimvirt/csi/state"
)

// A filesystem volume's directory is written by the pods that mount it: disk.img may be a
// symlink or a hard link to a node file, a FIFO, a directory or a device node by the time the
// driver (root on the node) clones, grows, resets, measures or attaches it. Every such
// operation opens disk.img with openDisk and works on the descriptor only.

// refusal is an operation the driver will not do because of what is at a volume's disk.img.
// It is FailedPrecondition over gRPC and a permanent failure for a fill.
type refusal struct {
	volume, op string
	err        *diskimg.RefusedError
}

func (r *refusal) Error() string {
	return fmt.Sprintf("volume %s: %s %v (%s); refusing to %s", r.volume, r.err.Name, r.err.Err, r.err.Found, r.op)
}

func (r *refusal) Unwrap() error              { return r.err }
func (r *refusal) Permanent() bool            { return true }
func (r *refusal) GRPCStatus() *status.Status { return status.New(codes.FailedPrecondition, r.Error()) }

// openDisk opens v's disk.img for op (a verb for the refusal's message: "clone", "expand").
func openDisk(v state.Volume, flag int, op string) (*os.File, error) {
	f, err := diskimg.OpenDisk(v.Dir, flag)
	var re *diskimg.RefusedError
	if errors.As(err, &re) {
		return nil, &refusal{volume: v.Name, op: op, err: re}
	}
	if err != nil {
		return nil, fmt.Errorf("open the disk of volume %s: %w", v.Name, err)
	}
	return f, nil
}

// resetDisk drops every block of v's disk.img, keeping its size.
func resetDisk(v state.Volume) error {
	f, err := openDisk(v, os.O_RDWR, "reset")
	if err != nil {
		return err
	}
	defer f.Close()
	return diskimg.ResetFile(f)
}

// allocated returns the bytes v's disk.img occupies.
func allocated(v state.Volume, op string) (int64, error) {
	f, err := openDisk(v, os.O_RDONLY, op)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return diskimg.AllocatedFile(f)
}

// rpcError keeps an error's gRPC status (a refusal's FailedPrecondition) and makes any other
// error Internal.
func rpcError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
