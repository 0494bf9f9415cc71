package proctest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/store"
)

// TestClusterFailoverKeepsFiring runs every role on a Redis Cluster of three
// masters with a replica each. 200 schedules across every partition must run
// each slot exactly once on two schedulers and two workers. They must keep
// firing, with no slot run twice, after the master that holds asynq's queue
// and some partitions is killed and its replica promoted.
func TestClusterFailoverKeepsFiring(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a six-node Redis Cluster and five pulse processes for about 40s")
	}
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{})
	top := startTopology(t, cluster.URL(), nil)

	schedules := top.createSchedules(t, 200)
	byPartition := partitionsOf(schedules)
	require.Lenf(t, byPartition, store.PartitionsDefault, "200 schedules must cover every partition")

	// Let every schedule fire a few slots on the healthy cluster.
	last := schedules[len(schedules)-1].createdAt
	waitAllFireAfter(t, top, schedules, last.Add(3*time.Second), 20*time.Second)
	requireEverySlotOnce(t, top, schedules, last.Add(2*time.Second))

	// The master of asynq's queue, which every slot passes through.
	victim := cluster.MasterOf(t, "asynq:{pulse}:pending")
	keys := store.NewKeys(store.PrefixDefault, store.PartitionsDefault)
	victimPartitions := 0
	for p := range byPartition {
		if cluster.MasterOf(t, keys.DueKey(p)).Addr() == victim.Addr() {
			victimPartitions++
		}
	}
	t.Logf("killing master %s, which holds asynq's queue and %d partitions", victim.Addr(), victimPartitions)
	killed := time.Now()
	cluster.Kill(victim)
	cluster.WaitHealthy(t, 30*time.Second)
	t.Logf("replica promoted %s after the kill", time.Since(killed).Round(time.Millisecond))

	waitAllFireAfter(t, top, schedules, time.Now().Add(time.Second), 30*time.Second)
	require.Empty(t, duplicateSlots(top.starts(t)), "slots started more than once with attempt 0")
	for _, p := range top.all() {
		require.Falsef(t, p.Exited(), "%s exited during the failover", p.Name())
	}
}
