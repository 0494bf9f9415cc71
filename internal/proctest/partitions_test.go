package proctest_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/api"
	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redisconn"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/scheduler"
	"github.com/pulse-sched/pulse/store"
)

// partitionLease is the --partition-lease of TestSchedulersSharePartitions.
// docs/architecture.md bounds a takeover by a third of it plus 50ms when a
// scheduler joins or stops gracefully, and by 4/3 of it when one dies.
const partitionLease = 1500 * time.Millisecond

// TestSchedulersSharePartitions runs four schedulers that join one by one,
// then stops one gracefully and kills another. After each change every
// partition must be held by exactly one live scheduler within the documented
// takeover time, and over the whole run every slot of 60 schedules must
// start exactly once.
func TestSchedulersSharePartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts seven pulse processes for about 30s")
	}
	redis := redistest.Start(t)
	plugins := proctest.WritePlugins(t, "leases")
	env := map[string]string{"PULSE_PARTITION_LEASE": partitionLease.String()}
	start := func(name, role string) *proctest.Process {
		p := proctest.Start(t, proctest.Options{
			Name: name, Args: []string{role}, RedisURL: redis.URL(), PluginsFile: plugins.Path, Env: env,
		})
		p.WaitReady(t, 30*time.Second)
		return p
	}
	apiProcess := start("api", "api")
	top := &topology{api: apiProcess, token: plugins.Token}
	for i := 1; i <= 2; i++ {
		top.workers = append(top.workers, start(fmt.Sprintf("worker-%d", i), "worker"))
	}

	rdb, err := redisconn.NewClient(redis.URL())
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })
	st, err := store.New(rdb, store.Config{})
	require.NoError(t, err)

	joinOrLeave := partitionLease/3 + 50*time.Millisecond
	crash := partitionLease * 4 / 3
	// The bounds hold from the change on; the scheduler process also needs
	// time to start, and the test to see the result.
	slack := 5 * time.Second

	var live []*proctest.Process
	for i := 1; i <= 4; i++ {
		s := start(fmt.Sprintf("scheduler-%d", i), "scheduler")
		live = append(live, s)
		top.schedulers = append(top.schedulers, s)
		requireOwnedOnce(t, st, live, joinOrLeave+slack)
		if i == 1 {
			top.createdRunAll(t, 60)
		}
	}

	leaving := live[1]
	leaving.Terminate(t)
	require.Equal(t, 0, leaving.Wait(t, 20*time.Second))
	live = slices.Delete(live, 1, 2)
	requireOwnedOnce(t, st, live, joinOrLeave+slack)

	dying := live[1]
	dying.Kill(t)
	live = slices.Delete(live, 1, 2)
	requireOwnedOnce(t, st, live, crash+slack)

	// Every slot missed while the dead scheduler's partitions waited for
	// their lease to run out must still run, as the schedules use run_all.
	after := time.Now().Add(2 * time.Second)
	waitAllFireAfter(t, top, top.created, after, 20*time.Second)
	requireEverySlotOnce(t, top, top.created, after)
}

// createdRunAll creates n pulse.log schedules of a one-second interval with
// misfire_policy run_all and records them in top.created.
func (top *topology) createdRunAll(t *testing.T, n int) {
	t.Helper()
	client := top.api.Client(t)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		resp, err := client.CreateSchedule(ctx, &protocolpb.CreateScheduleRequest{
			AuthToken: top.token, HandlerName: "pulse.log", IntervalSeconds: 1, MisfirePolicy: "run_all",
		})
		cancel()
		require.NoError(t, err)
		require.Truef(t, resp.GetSuccess(), "CreateSchedule failed: %s: %s", resp.GetErrorCode(), resp.GetError())
		job := getSchedule(t, client, top.token, resp.GetScheduleId())
		createdAt, err := time.Parse(api.TimeFormat, job.GetCreatedAt())
		require.NoError(t, err)
		top.created = append(top.created, firingSchedule{id: resp.GetScheduleId(), createdAt: createdAt, interval: time.Second})
	}
}

// requireOwnedOnce waits until every partition's lease is held by the live
// scheduler that scheduler.PartitionOwners assigns it to. Each live
// scheduler must also export the number of partitions it holds as
// pulse_scheduler_partitions_owned, which rules out a scheduler that claims
// a partition it does not hold.
func requireOwnedOnce(t *testing.T, st *store.Store, live []*proctest.Process, timeout time.Duration) {
	t.Helper()
	replicas := map[string]string{} // replica ID to process name
	var ids []string
	for _, s := range live {
		l := s.WaitLog(t, 10*time.Second, "scheduler start record", proctest.MsgIs("scheduler started"))
		replicas[l.String("replica")] = s.Name()
		ids = append(ids, l.String("replica"))
	}

	began := time.Now()
	var last string
	ok := poll(timeout, func() bool {
		holders, err := st.LeaseHolders(context.Background())
		if err != nil {
			last = err.Error()
			return false
		}
		held := map[string]float64{}
		owners := scheduler.PartitionOwners(ids, len(holders))
		for p, h := range holders {
			if want := owners[p]; h != want {
				last = fmt.Sprintf("partition %d is held by %q, not by %s", p, h, replicas[want])
				return false
			}
			held[replicas[h]]++
		}
		for _, s := range live {
			if owned := s.Metric(t, "pulse_scheduler_partitions_owned"); owned != held[s.Name()] {
				last = fmt.Sprintf("%s exports %v partitions owned but holds %v", s.Name(), owned, held[s.Name()])
				return false
			}
		}
		last = fmt.Sprintf("held %v", held)
		return true
	})
	require.Truef(t, ok, "partitions not owned once by the %d live schedulers within %s: %s", len(live), timeout, last)
	t.Logf("%d schedulers: %s, %s after the change was seen", len(live), last, time.Since(began).Round(10*time.Millisecond))
}
