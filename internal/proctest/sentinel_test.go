package proctest_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/proctest"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// TestSentinelFailoverKeepsFiring runs every role through three sentinels
// and makes them fail the master over to its replica while 100 schedules
// fire every second. Every role must follow the new master, every schedule
// must keep firing, and no slot may start twice. The master runs with
// min-replicas-to-write 1, as docs/architecture.md advises.
func TestSentinelFailoverKeepsFiring(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis with a replica, three sentinels and five pulse processes for about 30s")
	}
	// Without min-replicas-to-write, the former master would go on taking
	// the writes of the roles that have not switched yet, and lose them
	// once it becomes a replica: a slot whose start record was lost can run
	// again.
	sentinel := redistest.StartSentinel(t, redistest.SentinelOptions{MinReplicasToWrite: 1})
	top := startTopology(t, sentinel.URL(), nil)

	schedules := top.createSchedules(t, 100)
	last := schedules[len(schedules)-1].createdAt
	waitAllFireAfter(t, top, schedules, last.Add(2*time.Second), 20*time.Second)
	requireEverySlotOnce(t, top, schedules, last.Add(time.Second))

	before := sentinel.MasterAddr(t)
	began := time.Now()
	after := sentinel.Failover(t)
	t.Logf("master moved from %s to %s in %s", before, after, time.Since(began).Round(time.Millisecond))

	waitAllFireAfter(t, top, schedules, time.Now().Add(time.Second), 30*time.Second)
	for _, p := range top.all() {
		require.Falsef(t, p.Exited(), "%s exited during the failover", p.Name())
		p.WaitReady(t, 10*time.Second)
	}
	fresh := top.createSchedules(t, 1)
	waitAllFireAfter(t, top, fresh, fresh[0].createdAt, 10*time.Second)
	require.Empty(t, duplicateSlots(top.starts(t)), "slots started more than once with attempt 0")
}

// TestSentinelWaitKeepsAcknowledgedCreates creates schedules without pause
// through an API started with --wait-replicas 1 while the sentinels fail
// the master over: every create that succeeded must still be readable once
// the former master has become a replica of the new one.
func TestSentinelWaitKeepsAcknowledgedCreates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis with a replica and three sentinels and waits about 20s for the former master to follow the new one")
	}
	// The former master accepts writes after the failover, until a sentinel
	// turns it into a replica: only WAIT keeps such a write from being
	// acknowledged.
	sentinel := redistest.StartSentinel(t, redistest.SentinelOptions{})
	plugins := proctest.WritePlugins(t, "durable")
	apiProcess := proctest.Start(t, proctest.Options{
		Name: "api", Args: []string{"api"}, RedisURL: sentinel.URL(), PluginsFile: plugins.Path,
		Env: map[string]string{"PULSE_WAIT_REPLICAS": "1", "PULSE_WAIT_TIMEOUT": "500ms"},
	})
	apiProcess.WaitReady(t, 30*time.Second)
	client := apiProcess.Client(t)

	var (
		mu           sync.Mutex
		acknowledged []string
		failed       int
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// At most 20000 calls, however long the failover takes.
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			resp, err := client.CreateSchedule(ctx, &protocolpb.CreateScheduleRequest{
				AuthToken: plugins.Token, HandlerName: "pulse.log", IntervalSeconds: 3600,
			})
			cancel()
			mu.Lock()
			if err == nil && resp.GetSuccess() {
				acknowledged = append(acknowledged, resp.GetScheduleId())
			} else {
				failed++
			}
			mu.Unlock()
		}
	}()
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acknowledged)
	}
	require.Truef(t, poll(10*time.Second, func() bool { return ackedCount() >= 100 }), "fewer than 100 creates succeeded before the failover")
	sentinel.Failover(t)
	before := ackedCount()
	require.Truef(t, poll(20*time.Second, func() bool { return ackedCount() >= before+100 }), "fewer than 100 creates succeeded after the failover")
	close(stop)
	<-done

	// Once the former master follows the new one, it has dropped whatever
	// the new master never received.
	sentinel.WaitHealthy(t, 40*time.Second)
	mu.Lock()
	t.Logf("creates acknowledged %d, failed %d", len(acknowledged), failed)
	ids := acknowledged
	mu.Unlock()
	var lost []string
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		resp, err := client.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: plugins.Token, ScheduleId: id})
		cancel()
		require.NoError(t, err)
		if !resp.GetSuccess() {
			lost = append(lost, id)
		}
	}
	require.Emptyf(t, lost, "%d of %d acknowledged creates were lost in the failover", len(lost), len(ids))
}
