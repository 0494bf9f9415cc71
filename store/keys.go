package store

import (
	"fmt"
	"hash/fnv"
)

// Keys builds every Redis key that Pulse uses. No other package builds keys.
//
// Schedules are spread over a fixed number of partitions. All keys of one
// partition carry the same hash tag, "{p<N>}" after the prefix, so that every
// Lua script touches one Redis Cluster slot and partitions spread over the
// shards of a cluster.
type Keys struct {
	prefix     string
	partitions int
}

// NewKeys returns the key builder for prefix and a partition count. The
// prefix separates Pulse deployments (or tests) that share one Redis.
func NewKeys(prefix string, partitions int) Keys {
	return Keys{prefix: prefix, partitions: partitions}
}

// Partitions returns the partition count.
func (k Keys) Partitions() int { return k.partitions }

// PartitionOf returns the partition of a schedule: FNV-1a of its ID modulo the
// partition count. It never changes for a given ID and partition count.
func (k Keys) PartitionOf(scheduleID string) int {
	h := fnv.New32a()
	h.Write([]byte(scheduleID))
	return int(h.Sum32() % uint32(k.partitions))
}

// MetaKey is a HASH of deployment-wide settings: "partitions" (the partition
// count fixed at first start) and "schema" (the layout version).
func (k Keys) MetaKey() string {
	return k.prefix + ":meta"
}

// partitionPrefix is the common start of every key in partition p, hash tag
// included.
func (k Keys) partitionPrefix(p int) string {
	return fmt.Sprintf("%s:{p%d}:", k.prefix, p)
}

// ScheduleKey is a HASH with the small, mutable fields of one schedule (see
// the field constants in schedule.go). It stays small so that Redis keeps it in
// its compact listpack encoding.
func (k Keys) ScheduleKey(p int, scheduleID string) string {
	return k.partitionPrefix(p) + "schedule:" + scheduleID
}

// SpecKey is a STRING with the immutable definition of one schedule: handler
// name, source URL, metadata and payload (see encodeSpec).
func (k Keys) SpecKey(p int, scheduleID string) string {
	return k.partitionPrefix(p) + "spec:" + scheduleID
}

// ErrorKey is a STRING with the error of the schedule's latest failed
// attempt. It is kept apart from the schedule hash because errors are often
// longer than the 64 bytes that keep the hash compact. It exists only while
// the latest execution failed.
func (k Keys) ErrorKey(p int, scheduleID string) string {
	return k.partitionPrefix(p) + "error:" + scheduleID
}

// PausedKey is a SET of the IDs of the paused schedules of partition p.
func (k Keys) PausedKey(p int) string {
	return k.partitionPrefix(p) + "paused"
}

// DeletedKey is a ZSET of the IDs of the deleted schedules of partition p,
// scored by the Unix time in milliseconds at which their records expire.
func (k Keys) DeletedKey(p int) string {
	return k.partitionPrefix(p) + "deleted"
}

// OwnersKey is a HASH from ats_code to the number of schedules of that plugin
// in partition p that are not deleted.
func (k Keys) OwnersKey(p int) string {
	return k.partitionPrefix(p) + "owners"
}

// DueKey is a ZSET of the active schedules of partition p, scored by the
// Unix time in milliseconds of their next slot. A schedule is in it if and
// only if its state is active.
func (k Keys) DueKey(p int) string {
	return k.partitionPrefix(p) + "due"
}

// InflightKey is a ZSET of the slots of partition p that a scheduler claimed
// but has not yet confirmed as enqueued. Members are
// "<id>|<first slot ms>|<gen>|<slot count>", scored by the Unix time in
// milliseconds at which the claim's lease ends.
func (k Keys) InflightKey(p int) string {
	return k.partitionPrefix(p) + "inflight"
}

// LeaseKey is a HASH with the lease of partition p among scheduler
// replicas: "owner" (replica ID, empty once released), "until" (end of the
// lease, Unix milliseconds) and "token" (fencing token, raised by every
// acquisition). It has no TTL: the token must outlive every lease.
func (k Keys) LeaseKey(p int) string {
	return k.partitionPrefix(p) + "lease"
}

// SchedulersKey is a ZSET of the live scheduler replicas, scored by the Unix
// time in milliseconds at which each one counts as gone unless it sends
// another heartbeat.
func (k Keys) SchedulersKey() string {
	return k.prefix + ":schedulers"
}

// schedulePrefix is ScheduleKey without the ID, for scripts that build the
// keys of the schedules they find in a ZSET of the same partition.
func (k Keys) schedulePrefix(p int) string {
	return k.partitionPrefix(p) + "schedule:"
}
