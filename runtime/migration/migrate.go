package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"libvirt.org/go/libvirt"
)

// Options are how a migration runs.
type Options struct {
	// Sockets are the source's sockets of the channel (ListenSource).
	Sockets Sockets
	// Channel, when set, says how the channel failed, which a failed migration's error then
	// adds to libvirt's.
	Channel interface{ Err() error }
	// TargetSession says the target's libvirtd runs unprivileged (libvirtd.Session there).
	TargetSession bool
	// BandwidthMiBs caps the migration (VIR_MIGRATE_PARAM_BANDWIDTH), in MiB/s; 0 leaves it
	// uncapped.
	BandwidthMiBs uint64
	// Progress, when set, is called every ProgressEvery (default 1 s) while the migration runs.
	Progress      func(Progress)
	ProgressEvery time.Duration
	Log           *slog.Logger
}

// Progress is a running migration's state, from libvirt's job statistics.
type Progress struct {
	Elapsed                     time.Duration
	MemoryDone, MemoryTotal     uint64
	DiskDone, DiskTotal         uint64
	DataRemaining, MemIteration uint64
}

// Stats are a completed migration's figures, from libvirt's job statistics.
type Stats struct {
	// Total is the migration's whole time, Downtime the time the guest was paused.
	Total, Downtime time.Duration
	// MemoryBytes and DiskBytes are what libvirt counts as processed: the disks' count takes
	// in the zeros NBD did not send.
	MemoryBytes, DiskBytes uint64
	// MemoryTotal and DiskTotal are the guest's RAM and the copied disks' sizes.
	MemoryTotal, DiskTotal uint64
}

// flags are libvirt's flags for a migration of dom: live, peer to peer (the source libvirtd
// drives the target libvirtd through the channel), copying every writable local disk
// through NBD, aborting on an I/O error; a persistent domain stays defined on the target and
// is undefined on the source, which libvirt does only once the target runs it.
func flags(persistent bool) libvirt.DomainMigrateFlags {
	f := libvirt.MIGRATE_LIVE | libvirt.MIGRATE_PEER2PEER | libvirt.MIGRATE_NON_SHARED_DISK | libvirt.MIGRATE_ABORT_ON_ERROR
	if persistent {
		f |= libvirt.MIGRATE_PERSIST_DEST | libvirt.MIGRATE_UNDEFINE_SOURCE
	}
	return f
}

// params are the migration's parameters: QEMU's and NBD's streams on the channel's sockets.
func params(opts Options) *libvirt.DomainMigrateParameters {
	p := &libvirt.DomainMigrateParameters{
		URISet: true, URI: opts.Sockets.MemoryURI(),
		DisksURISet: true, DisksURI: opts.Sockets.DisksURI(),
	}
	if opts.BandwidthMiBs > 0 {
		p.BandwidthSet, p.Bandwidth = true, opts.BandwidthMiBs
	}
	return p
}

// Migrate live-migrates dom, a domain of conn (the source libvirtd), to the target reached
// through the channel's sockets. It returns when the target runs the domain, or with the
// reason it did not; then the domain still runs here. Cancelling ctx aborts the migration.
// conn must have libvirt's event loop running (libvirtd.Start runs it) for the statistics.
func Migrate(ctx context.Context, conn *libvirt.Connect, dom *libvirt.Domain, opts Options) (Stats, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = time.Second
	}
	name, err := dom.GetName()
	if err != nil {
		return Stats{}, fmt.Errorf("read the domain's name: %w", err)
	}
	if active, err := dom.IsActive(); err != nil || !active {
		return Stats{}, fmt.Errorf("migrate %s: %w", name, errors.Join(ErrNotLive, err))
	}
	persistent, err := dom.IsPersistent()
	if err != nil {
		return Stats{}, fmt.Errorf("read whether %s is persistent: %w", name, err)
	}
	completed := make(chan libvirt.DomainJobInfo, 1)
	cb, err := conn.DomainEventJobCompletedRegister(dom, func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainEventJobCompleted) {
		select {
		case completed <- ev.Info:
		default:
		}
	})
	if err != nil {
		return Stats{}, fmt.Errorf("watch the migration of %s: %w", name, err)
	}
	defer func() { _ = conn.DomainEventDeregister(cb) }()

	log := opts.Log.With("domain", name)
	log.Info("migration starting", "dest", opts.Sockets.DestURI(opts.TargetSession), "persistent", persistent)
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watch(ctx, dom, done, opts, log)
	}()
	err = dom.MigrateToURI3(opts.Sockets.DestURI(opts.TargetSession), params(opts), flags(persistent))
	close(done)
	<-watched
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return Stats{}, fmt.Errorf("migrate %s: aborted (%w): %w", name, cause, err)
		}
		if opts.Channel != nil {
			if cerr := opts.Channel.Err(); cerr != nil {
				return Stats{}, fmt.Errorf("migrate %s: %w; the channel failed: %w", name, err, cerr)
			}
		}
		return Stats{}, fmt.Errorf("migrate %s: %w", name, err)
	}
	select {
	case info := <-completed:
		st := statsOf(info)
		log.Info("migration completed", "took", st.Total, "downtime", st.Downtime, "memory", st.MemoryBytes, "disks", st.DiskBytes)
		return st, nil
	case <-time.After(5 * time.Second):
		log.Warn("migration completed without statistics")
		return Stats{}, nil
	}
}

// watch reports progress until done, and aborts the migration's job when ctx ends first.
func watch(ctx context.Context, dom *libvirt.Domain, done <-chan struct{}, opts Options, log *slog.Logger) {
	tick := time.NewTicker(opts.ProgressEvery)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			// The job may not have started yet: abort until it has been, or has ended.
			for {
				if err := dom.AbortJob(); err == nil {
					log.Warn("migration aborted", "cause", context.Cause(ctx))
					<-done
					return
				}
				select {
				case <-done:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		case <-tick.C:
			if opts.Progress == nil {
				continue
			}
			info, err := dom.GetJobStats(0)
			if err != nil || info.Type == libvirt.DOMAIN_JOB_NONE {
				continue
			}
			opts.Progress(progressOf(info))
		}
	}
}

func progressOf(j *libvirt.DomainJobInfo) Progress {
	return Progress{
		Elapsed:       time.Duration(j.TimeElapsed) * time.Millisecond,
		MemoryDone:    j.MemProcessed,
		MemoryTotal:   j.MemTotal,
		DiskDone:      j.DiskProcessed,
		DiskTotal:     j.DiskTotal,
		DataRemaining: j.DataRemaining,
		MemIteration:  j.MemIteration,
	}
}

func statsOf(j libvirt.DomainJobInfo) Stats {
	return Stats{
		Total:       time.Duration(j.TimeElapsed) * time.Millisecond,
		Downtime:    time.Duration(j.Downtime) * time.Millisecond,
		MemoryBytes: j.MemProcessed,
		DiskBytes:   j.DiskProcessed,
		MemoryTotal: j.MemTotal,
		DiskTotal:   j.DiskTotal,
	}
}

// ErrNotLive is a domain that is not running and so cannot be migrated live.
var ErrNotLive = errors.New("the domain is not running")
