package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrFenced means a scheduler claimed with a fencing token that is no longer
// the partition's: another replica acquired the partition's lease since.
var ErrFenced = errors.New("partition lease held by another scheduler")

// Lease is a scheduler replica's hold on one partition. Leases only keep
// replicas from polling the same partitions: the claim script is atomic, so
// two replicas that both claim a partition still never claim a slot twice.
type Lease struct {
	Partition int
	// Token is the fencing token: every acquisition of the partition's lease
	// gets a higher one, and ClaimDueFenced with an older token claims
	// nothing.
	Token int64
	// Until is the Redis time at which the lease ends unless renewed.
	Until time.Time
}

// AcquireLease acquires partition p's lease for replica, or renews it when
// replica holds it already, for ttl by the Redis clock. It returns false and
// the current holder when another replica holds an unexpired lease.
func (s *Store) AcquireLease(ctx context.Context, p int, replica string, ttl time.Duration) (Lease, bool, string, error) {
	v, err := acquireLeaseScript.Run(ctx, s.rdb, []string{s.keys.LeaseKey(p)}, replica, ttl.Milliseconds()).Result()
	if err != nil {
		return Lease{}, false, "", fmt.Errorf("acquire the lease of partition %d: %w", p, err)
	}
	out, err := scriptResult(v)
	if err != nil || len(out) != 3 {
		return Lease{}, false, "", fmt.Errorf("acquire the lease of partition %d: unexpected script reply %v", p, v)
	}
	if asInt64(out[0]) != 1 {
		return Lease{}, false, asString(out[1]), nil
	}
	return Lease{Partition: p, Token: asInt64(out[1]), Until: msToTime(asInt64(out[2]))}, true, replica, nil
}

// ReleaseLease ends a lease at once if replica still holds it with the
// lease's token, so that the next owner can take the partition without
// waiting for the lease to run out.
func (s *Store) ReleaseLease(ctx context.Context, l Lease, replica string) error {
	if err := releaseLeaseScript.Run(ctx, s.rdb, []string{s.keys.LeaseKey(l.Partition)}, replica, l.Token).Err(); err != nil {
		return fmt.Errorf("release the lease of partition %d: %w", l.Partition, err)
	}
	return nil
}

// Heartbeat records scheduler replica as alive for ttl by the Redis clock
// and returns every live replica, sorted.
func (s *Store) Heartbeat(ctx context.Context, replica string, ttl time.Duration) ([]string, error) {
	live, err := heartbeatScript.Run(ctx, s.rdb, []string{s.keys.SchedulersKey()}, replica, ttl.Milliseconds(), "0").StringSlice()
	if err != nil {
		return nil, fmt.Errorf("record scheduler %s as alive: %w", replica, err)
	}
	return live, nil
}

// LeaveSchedulers removes replica from the live scheduler replicas, so the
// others take its partitions over at their next heartbeat.
func (s *Store) LeaveSchedulers(ctx context.Context, replica string) error {
	if err := heartbeatScript.Run(ctx, s.rdb, []string{s.keys.SchedulersKey()}, replica, 0, "1").Err(); err != nil {
		return fmt.Errorf("remove scheduler %s from the live ones: %w", replica, err)
	}
	return nil
}

// LeaseHolders returns the holder of every partition's unexpired lease by
// the Redis clock, "" for a partition that no replica holds.
func (s *Store) LeaseHolders(ctx context.Context) ([]string, error) {
	now, err := s.ServerTime(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, s.keys.Partitions())
	for p := range out {
		f, err := s.rdb.HMGet(ctx, s.keys.LeaseKey(p), "owner", "until").Result()
		if err != nil {
			return nil, fmt.Errorf("read the lease of partition %d: %w", p, err)
		}
		if owner := asString(f[0]); owner != "" && asInt64(f[1]) > now.UnixMilli() {
			out[p] = owner
		}
	}
	return out, nil
}
