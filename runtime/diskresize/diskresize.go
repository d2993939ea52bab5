// Package diskresize lets a running guest see its PVC grow: it watches the backing of every
// PVC disk of the domain (the disk.img of a filesystem PVC, the device of a block PVC) and,
// when it grew, gives the guest the new size through libvirt's block resize, which a
// virtio-blk guest learns at once through a configuration change. The size only grows.
//
// The slimvirt CSI driver grows a filesystem volume's disk.img itself. An image that filled
// its own filesystem when the watch began (made by the launcher on a PVC without one, as
// KubeVirt does) is grown here when the filesystem grows, to the size the launcher gives a
// new image (volumes.ImageSize).
package diskresize

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"libvirt.org/go/libvirt"
)

// DefaultInterval is how often the backings are looked at.
const DefaultInterval = 2 * time.Second

// Domain is the running domain as the watch uses it; LibvirtDomain is libvirt's. Nothing
// asks libvirt what the guest sees: that would have libvirt open the disk's path, which is
// the tenant's to replace (by a link, or a FIFO that blocks the open).
type Domain interface {
	// Resize gives the guest size bytes of the disk whose source is path.
	Resize(path string, size int64) error
}

// LibvirtDomain is a libvirt domain.
type LibvirtDomain struct{ Dom *libvirt.Domain }

// Resize is virDomainBlockResize in bytes.
func (d LibvirtDomain) Resize(path string, size int64) error {
	return d.Dom.BlockResize(path, uint64(size), libvirt.DOMAIN_BLOCK_RESIZE_BYTES)
}

// Resized is a disk whose guest-visible size grew.
type Resized struct {
	Volume string
	// From and To are the bytes the guest saw before and sees now.
	From, To int64
	// Filled says the image was first grown into its grown filesystem.
	Filled bool
}

// Options tune a watch.
type Options struct {
	// Interval is the time between two looks; DefaultInterval when 0.
	Interval time.Duration
	Log      *slog.Logger
	// OnResize, when set, is told of every disk that grew, after the guest was given it.
	OnResize func(Resized)
}

// watched is a disk under watch.
type watched struct {
	Disk
	b     *backing
	state state
}

// Watch follows disks of dom until ctx ends. Call it as soon as the domain is created: the
// guest is taken to see each backing as it is when the watch begins. A disk whose backing
// cannot be opened (a link, a FIFO, anything but a regular file or a block device) is logged
// and left as it is. Watch returns an error only when no disk could be watched at all.
func Watch(ctx context.Context, dom Domain, disks []Disk, opts Options) error {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	var ws []*watched
	var errs []error
	for _, d := range disks {
		w, err := begin(d)
		if err != nil {
			opts.Log.Warn("disk will not grow online", "volume", d.Volume, "err", err)
			errs = append(errs, err)
			continue
		}
		ws = append(ws, w)
	}
	defer func() {
		for _, w := range ws {
			_ = w.b.Close()
		}
	}()
	if len(ws) == 0 {
		return errors.Join(errs...)
	}
	tick := time.NewTicker(opts.Interval)
	defer tick.Stop()
	for {
		for _, w := range ws {
			w.check(dom, opts)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// begin opens d's backing.
func begin(d Disk) (*watched, error) {
	b, err := openBacking(d)
	if err != nil {
		return nil, err
	}
	first, err := b.look()
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	// The guest sees the backing as QEMU found it when the domain started, moments ago.
	return &watched{Disk: d, b: b, state: start(GuestSize(first.size), first)}, nil
}

// check looks at the backing once and acts on what step decides.
func (w *watched) check(dom Domain, opts Options) {
	l, err := w.b.look()
	if err != nil {
		opts.Log.Error("look at a disk's backing", "volume", w.Volume, "err", err)
		return
	}
	from := w.state.capacity
	next, growTo, resizeTo := step(w.state, l)
	if growTo > 0 {
		if err := w.b.grow(growTo); err != nil {
			opts.Log.Error("grow an image into its filesystem", "volume", w.Volume, "size", growTo, "err", err)
			stuck := w.state
			stuck.follows = false
			next, _, resizeTo = step(stuck, l)
			growTo = 0
		} else {
			opts.Log.Info("grew an image into its filesystem", "volume", w.Volume, "path", w.Path, "from", l.size, "to", growTo)
		}
	}
	if resizeTo > 0 {
		if err := dom.Resize(w.Path, resizeTo); err != nil {
			opts.Log.Error("resize a disk", "volume", w.Volume, "size", resizeTo, "err", err)
			next.capacity, next.failed = from, resizeTo
		} else {
			opts.Log.Info("disk grew", "volume", w.Volume, "path", w.Path, "from", from, "to", resizeTo)
			if opts.OnResize != nil {
				opts.OnResize(Resized{Volume: w.Volume, From: from, To: resizeTo, Filled: growTo > 0})
			}
		}
	}
	w.state = next
}
