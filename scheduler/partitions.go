package scheduler

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/pulse-sched/pulse/store"
)

// Scheduler replicas share the partitions through leases. Every replica
// sends a heartbeat each third of PartitionLease, which also returns the live
// replicas, and wants the partitions that PartitionOwners gives it among
// them; every replica computes the same assignment from the same live set. A
// replica claims only the partitions whose lease it holds, and releases a
// partition when it no longer wants it, so the next owner takes it over at
// its next heartbeat.
//
// Leases only keep replicas from polling the same partitions. The claim
// script is atomic, so two replicas that both believe they own a partition
// never claim a slot twice. Besides, the claim of a replica that lost its
// lease claims nothing, because its fencing token is out of date.

// handoverPoll is how often a replica tries again to acquire a partition
// that it wants and another live replica still holds.
const handoverPoll = 50 * time.Millisecond

// ownedPartition is a partition whose lease this replica holds, with the
// loops that claim and reclaim its slots.
type ownedPartition struct {
	lease  store.Lease
	cancel context.CancelFunc
	done   chan struct{}
}

// stop ends the partition's loops and waits for them. The claim loop first
// enqueues what it has claimed, so no slot is left in flight.
func (o *ownedPartition) stop() {
	o.cancel()
	<-o.done
}

// runLeased runs the partitions whose lease this replica holds until ctx
// ends, then releases every lease and leaves the live replicas, so that the
// others take the partitions over at once.
func (s *Scheduler) runLeased(ctx context.Context) {
	owned := map[int]*ownedPartition{}
	tick := s.cfg.PartitionLease / 3
	for {
		wait := tick
		if waiting := s.rebalance(ctx, owned); waiting {
			// A partition is on its way from another replica, which
			// releases it at its own next rebalance: look again soon, so
			// that it stays unowned for a moment only.
			wait = handoverPoll
		}
		if !sleep(ctx, wait) {
			break
		}
	}

	// ctx has ended: release with a context of our own.
	leaveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for p, o := range owned {
		o.stop()
		if err := s.store.ReleaseLease(leaveCtx, o.lease, s.replica); err != nil {
			s.logger.Warn("releasing a partition lease failed; it runs out by itself", "partition", p, "error", err)
		}
	}
	s.metrics.PartitionsOwned.Set(0)
	if err := s.store.LeaveSchedulers(leaveCtx, s.replica); err != nil {
		s.logger.Warn("leaving the live schedulers failed; the heartbeat runs out by itself", "error", err)
	}
}

// rebalance sends a heartbeat, then releases the partitions this replica no
// longer wants, renews the ones it keeps and acquires the ones it wants. It
// reports whether a wanted partition is held by a replica that is still
// live, and so about to release it.
func (s *Scheduler) rebalance(ctx context.Context, owned map[int]*ownedPartition) (waiting bool) {
	live, err := s.store.Heartbeat(ctx, s.replica, s.cfg.PartitionLease)
	if err != nil {
		if ctx.Err() == nil {
			s.logFailure("heartbeat", -1, err, 1, s.cfg.PartitionLease/3)
		}
		return false
	}
	s.lastPass.Store(time.Now().UnixNano())

	owners := PartitionOwners(live, s.store.Keys().Partitions())
	for p := range s.store.Keys().Partitions() {
		o, have := owned[p]
		if have && isDone(o.done) {
			// The claim loop ended because its claim was fenced.
			delete(owned, p)
			have = false
		}
		if owners[p] != s.replica {
			if have {
				o.stop()
				delete(owned, p)
				if err := s.store.ReleaseLease(ctx, o.lease, s.replica); err != nil && ctx.Err() == nil {
					s.logger.Warn("releasing a partition lease failed; it runs out by itself", "partition", p, "error", err)
				}
				s.logger.Info("partition handed over", "partition", p, "replicas", len(live))
			}
			continue
		}

		lease, ok, holder, err := s.store.AcquireLease(ctx, p, s.replica, s.cfg.PartitionLease)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				s.logFailure("lease", p, err, 1, s.cfg.PartitionLease/3)
			}
		case !ok:
			// The previous owner has not seen this replica yet, or it died
			// and its lease has not run out.
			if have {
				o.stop()
				delete(owned, p)
			}
			waiting = waiting || slices.Contains(live, holder)
			s.logger.Debug("partition still held by another scheduler", "partition", p, "holder", holder)
		case have && o.lease.Token == lease.Token:
			o.lease = lease
		default:
			// New, or lost and acquired again: the loops restart with the
			// new fencing token.
			if have {
				o.stop()
			}
			owned[p] = s.startPartition(ctx, lease)
			s.logger.Info("partition taken over", "partition", p, "fencing_token", lease.Token, "replicas", len(live))
		}
	}
	s.metrics.PartitionsOwned.Set(float64(len(owned)))
	return waiting
}

// startPartition starts the claim and reclaim loops of a leased partition.
func (s *Scheduler) startPartition(ctx context.Context, lease store.Lease) *ownedPartition {
	ctx, cancel := context.WithCancel(ctx)
	o := &ownedPartition{lease: lease, cancel: cancel, done: make(chan struct{})}
	loops := make(chan struct{}, 2)
	go func() {
		defer func() { loops <- struct{}{} }()
		s.runPartition(ctx, lease.Partition, lease.Token)
		// A fenced claim loop ends by itself; its reclaim loop goes with it.
		cancel()
	}()
	go func() {
		defer func() { loops <- struct{}{} }()
		s.runReclaim(ctx, lease.Partition)
	}()
	go func() {
		<-loops
		<-loops
		close(o.done)
	}()
	return o
}

// PartitionOwners assigns each partition to one of the live replica IDs, and
// every replica computes the same assignment. Partition by partition, it
// picks the replica with the highest rendezvous hash of (replica, partition)
// among those that hold fewer than ceil(partitions / replicas) so far. The
// cap keeps the shares within one partition of each other, and the hash
// moves few partitions when a replica joins or leaves. It returns nil
// without live replicas.
func PartitionOwners(live []string, partitions int) []string {
	if len(live) == 0 {
		return nil
	}
	limit := (partitions + len(live) - 1) / len(live)
	load := make(map[string]int, len(live))
	owners := make([]string, partitions)
	for p := range owners {
		var best string
		var bestScore uint64
		for _, r := range live {
			if load[r] >= limit {
				continue
			}
			if score := rendezvousScore(r, p); best == "" || score > bestScore {
				best, bestScore = r, score
			}
		}
		owners[p] = best
		load[best]++
	}
	return owners
}

// rendezvousScore is FNV-1a of "<replica>/<p>" with MurmurHash3's 64-bit
// finalizer: FNV-1a alone lets IDs that share a long prefix, as ULIDs made
// in the same millisecond do, rank the same way for every partition.
func rendezvousScore(replica string, p int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(replica + "/" + strconv.Itoa(p)))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// newReplicaID returns a scheduler replica ID, unique among replicas.
func newReplicaID() string {
	return ulid.Make().String()
}

func isDone(done chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// isFenced reports whether err is store.ErrFenced: another replica holds
// the lease.
func isFenced(err error) bool {
	return errors.Is(err, store.ErrFenced)
}
