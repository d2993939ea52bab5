// Package quota gives a directory a project quota: a project ID inherited by everything made
// below it (FS_XFLAG_PROJINHERIT) and hard block and inode limits for that project, on XFS
// mounted with prjquota/pquota and on ext4 with the project and quota features mounted with
// prjquota. It talks to the kernel directly (FS_IOC_FSSETXATTR, quotactl_fd with the XFS
// quota interface, which the generic quota code serves for ext4 too); no cgo, no xfs_quota.
package quota

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel interface constants (linux/dqblk_xfs.h, linux/quota.h, linux/fs.h); x/sys/unix does
// not carry them.
const (
	prjQuota = 2 // PRJQUOTA

	qXGetQuota  = 'X'<<8 + 3 // Q_XGETQUOTA
	qXSetQLim   = 'X'<<8 + 4 // Q_XSETQLIM
	qXGetQStatV = 'X'<<8 + 8 // Q_XGETQSTATV

	fsDquotVersion = 1 // FS_DQUOT_VERSION
	fsProjQuota    = 2 // FS_PROJ_QUOTA
	fsDqISoft      = 1 << 0
	fsDqIHard      = 1 << 1
	fsDqBSoft      = 1 << 2
	fsDqBHard      = 1 << 3

	fsQStatVVersion1 = 1      // FS_QSTATV_VERSION1
	fsQuotaPDQAcct   = 1 << 4 // FS_QUOTA_PDQ_ACCT
	fsQuotaPDQEnfd   = 1 << 5 // FS_QUOTA_PDQ_ENFD

	fsXflagProjInherit = 0x200      // FS_XFLAG_PROJINHERIT
	fsIocFSGetXattr    = 0x801c581f // FS_IOC_FSGETXATTR
	fsIocFSSetXattr    = 0x401c5820 // FS_IOC_FSSETXATTR

	// basicBlock is the unit of the XFS quota interface's block counts.
	basicBlock = 512
)

// fsDiskQuota is struct fs_disk_quota.
type fsDiskQuota struct {
	Version      int8
	Flags        int8
	FieldMask    uint16
	ID           uint32
	BlkHardLimit uint64
	BlkSoftLimit uint64
	InoHardLimit uint64
	InoSoftLimit uint64
	BCount       uint64
	ICount       uint64
	ITimer       int32
	BTimer       int32
	IWarns       uint16
	BWarns       uint16
	ITimerHi     int8
	BTimerHi     int8
	RtbTimerHi   int8
	_            int8
	RtbHardLimit uint64
	RtbSoftLimit uint64
	RtbCount     uint64
	RtbTimer     int32
	RtbWarns     uint16
	_            int16
	_            [8]byte
}

// fsQFileStatV is struct fs_qfilestatv.
type fsQFileStatV struct {
	Ino      uint64
	NBlks    uint64
	NExtents uint32
	_        uint32
}

// fsQuotaStatV is struct fs_quota_statv.
type fsQuotaStatV struct {
	Version      int8
	_            uint8
	Flags        uint16
	InCoreDQs    uint32
	UQuota       fsQFileStatV
	GQuota       fsQFileStatV
	PQuota       fsQFileStatV
	BTimeLimit   int32
	ITimeLimit   int32
	RtbTimeLimit int32
	BWarnLimit   uint16
	IWarnLimit   uint16
	RtbWarnLimit uint16
	_            uint16
	_            uint32
	_            [7]uint64
}

// fsxattr is struct fsxattr.
type fsxattr struct {
	XFlags     uint32
	ExtSize    uint32
	NExtents   uint32
	ProjID     uint32
	CowExtSize uint32
	_          [8]byte
}

// ErrUnsupported says the filesystem does not account and enforce project quotas.
var ErrUnsupported = errors.New("project quotas are not enforced")

func quotactl(fd, cmd int, id uint32, addr unsafe.Pointer) error {
	qcmd := cmd<<8 | prjQuota
	_, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), uintptr(qcmd), uintptr(id), uintptr(addr), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// withDir runs fn on a descriptor of dir, opened without following a link.
func withDir(dir string, fn func(fd int) error) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return fn(fd)
}

// Supported says whether the filesystem holding dir accounts and enforces project quotas. A
// filesystem without quota support at all, or with project quotas off, is ErrUnsupported.
func Supported(dir string) error {
	return withDir(dir, func(fd int) error {
		st := fsQuotaStatV{Version: fsQStatVVersion1}
		err := quotactl(fd, qXGetQStatV, 0, unsafe.Pointer(&st))
		switch {
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EINVAL),
			errors.Is(err, unix.ESRCH), errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTTY):
			return fmt.Errorf("%s: %w (%w)", dir, ErrUnsupported, err)
		case err != nil:
			return fmt.Errorf("read quota state of %s: %w", dir, err)
		}
		const want = fsQuotaPDQAcct | fsQuotaPDQEnfd
		if st.Flags&want != want {
			return fmt.Errorf("%s: %w (accounting %t, enforcement %t)", dir, ErrUnsupported,
				st.Flags&fsQuotaPDQAcct != 0, st.Flags&fsQuotaPDQEnfd != 0)
		}
		return nil
	})
}

// SetProject gives the directory dir project id and the inherit flag, so that everything
// made below it later is charged to the project. It does not change what is already there.
func SetProject(dir string, id uint32) error {
	return withDir(dir, func(fd int) error {
		var fa fsxattr
		if err := ioctl(fd, fsIocFSGetXattr, unsafe.Pointer(&fa)); err != nil {
			return fmt.Errorf("read attributes of %s: %w", dir, err)
		}
		fa.ProjID = id
		fa.XFlags |= fsXflagProjInherit
		if err := ioctl(fd, fsIocFSSetXattr, unsafe.Pointer(&fa)); err != nil {
			return fmt.Errorf("set project %d on %s: %w", id, dir, err)
		}
		return nil
	})
}

// Project returns the project ID of dir.
func Project(dir string) (uint32, error) {
	var fa fsxattr
	err := withDir(dir, func(fd int) error { return ioctl(fd, fsIocFSGetXattr, unsafe.Pointer(&fa)) })
	if err != nil {
		return 0, fmt.Errorf("read project of %s: %w", dir, err)
	}
	return fa.ProjID, nil
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// Limit is a project's hard limits; zero means no limit.
type Limit struct {
	Bytes  int64
	Inodes int64
}

// Usage is what a project holds and may hold.
type Usage struct {
	Limit
	UsedBytes  int64
	UsedInodes int64
}

// SetLimit sets project id's hard limits on the filesystem holding dir (soft limits are
// cleared: a soft limit only delays the hard one). Limits of zero remove the limits. Bytes are
// rounded up to 512-byte blocks.
func SetLimit(dir string, id uint32, l Limit) error {
	q := fsDiskQuota{
		Version:      fsDquotVersion,
		Flags:        fsProjQuota,
		FieldMask:    fsDqBHard | fsDqBSoft | fsDqIHard | fsDqISoft,
		ID:           id,
		BlkHardLimit: uint64((l.Bytes + basicBlock - 1) / basicBlock),
		InoHardLimit: uint64(l.Inodes),
	}
	return withDir(dir, func(fd int) error {
		if err := quotactl(fd, qXSetQLim, id, unsafe.Pointer(&q)); err != nil {
			return fmt.Errorf("set limit of project %d on %s: %w", id, dir, err)
		}
		return nil
	})
}

// Get returns project id's limits and usage on the filesystem holding dir; a project the
// filesystem has never seen is all zeros.
func Get(dir string, id uint32) (Usage, error) {
	var q fsDiskQuota
	err := withDir(dir, func(fd int) error { return quotactl(fd, qXGetQuota, id, unsafe.Pointer(&q)) })
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return Usage{}, nil
	}
	if err != nil {
		return Usage{}, fmt.Errorf("read quota of project %d on %s: %w", id, dir, err)
	}
	return Usage{
		Limit:      Limit{Bytes: int64(q.BlkHardLimit) * basicBlock, Inodes: int64(q.InoHardLimit)},
		UsedBytes:  int64(q.BCount) * basicBlock,
		UsedInodes: int64(q.ICount),
	}, nil
}

// Margin is what a volume's block limit adds to its size: the filesystem charges a file's
// metadata (extent tree blocks) to its project, so a disk.img written in full takes a little
// more than its size. A fully fragmented file needs about one 4 KiB extent block per 250
// data blocks (XFS bmbt: 16 bytes a record; ext4: 12); 1/128 of the size covers that with
// room for the tree's upper levels, and 1 MiB covers the directory and small files.
func Margin(size int64) int64 { return size/128 + 1<<20 }

// LimitFor is the project limit of a volume of size bytes: its size plus Margin, and one inode
// per 4 KiB of size plus 1024.
func LimitFor(size int64) Limit {
	return Limit{Bytes: size + Margin(size), Inodes: size/4096 + 1024}
}

// SizeFor is the largest volume size whose LimitFor bytes fit in free bytes.
func SizeFor(free int64) int64 {
	if free <= 1<<20 {
		return 0
	}
	s := (free - 1<<20) * 128 / 129
	for s > 0 && LimitFor(s).Bytes > free {
		s--
	}
	return s
}
