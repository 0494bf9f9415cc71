package store

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runningLease is long enough that no running marker expires during a test
// unless the test chooses a shorter one.
const runningLease = time.Minute

func startExecution(t *testing.T, st *Store, r SlotRef, attempt int) (Execution, Verdict) {
	t.Helper()
	e, v, err := st.StartExecution(testContext(t), StartRequest{Slot: r, Attempt: attempt, RunningLease: runningLease})
	require.NoError(t, err)
	return e, v
}

// mustRun starts an attempt that the test expects to run.
func mustRun(t *testing.T, st *Store, r SlotRef, attempt int) Execution {
	t.Helper()
	e, v := startExecution(t, st, r, attempt)
	require.Equal(t, VerdictRun, v)
	return e
}

func finishExecution(t *testing.T, st *Store, e Execution, status ExecutionStatus) bool {
	t.Helper()
	res, err := st.FinishExecution(testContext(t), FinishRequest{Execution: e, Status: status})
	require.NoError(t, err)
	return res.Recorded
}

func TestStartExecution(t *testing.T) {
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	t.Run("run records execution", func(t *testing.T) {
		n := newSchedule()
		n.Payload = []byte{0x00, 0xff, 0x01}
		s := createSchedule(t, st, n)
		ref := slotOf(s, 1)

		before := serverTime(t, st)
		e, v := startExecution(t, st, ref, 0)
		require.Equal(t, VerdictRun, v)

		want := Execution{
			ID:           ref.ExecutionID(),
			ScheduleID:   s.ID,
			ATSCode:      n.ATSCode,
			HandlerName:  n.HandlerName,
			SourceURL:    n.SourceURL,
			Slot:         ref.Slot,
			Attempt:      0,
			Payload:      n.Payload,
			MetadataJSON: n.MetadataJSON,
			StartedAt:    e.StartedAt,
		}
		if diff := cmp.Diff(want, e); diff != "" {
			t.Errorf("execution differs (-want +got):\n%s", diff)
		}
		require.False(t, e.StartedAt.Before(before.Truncate(time.Millisecond)), "started %s before %s", e.StartedAt, before)

		got := getSchedule(t, st, s.ID)
		require.Equal(t, ref.Slot, got.LastRunAt)
		require.Equal(t, ref.ExecutionID(), got.LastExecutionID)
		require.Equal(t, StatusRunning, got.LastStatus)
		require.Equal(t, ref.ExecutionID(), hashField(t, st, s.ID, fieldRunningExec))
		require.Equal(t, "0", hashField(t, st, s.ID, fieldRunningTry))
	})

	t.Run("paused", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		ref := slotOf(s, 1)
		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		_, v := startExecution(t, st, ref, 0)
		require.Equal(t, VerdictPaused, v)
		require.Empty(t, hashField(t, st, s.ID, fieldLastExecution))
	})

	t.Run("deleted", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		ref := slotOf(s, 1)
		_, err := st.DeleteSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		_, v := startExecution(t, st, ref, 0)
		require.Equal(t, VerdictDeleted, v)
		require.Empty(t, hashField(t, st, s.ID, fieldLastExecution))
	})

	t.Run("missing", func(t *testing.T) {
		ref := SlotRef{ScheduleID: ulid.Make().String(), Slot: time.UnixMilli(1_700_000_000_000).UTC(), Generation: 1}

		_, v := startExecution(t, st, ref, 0)
		require.Equal(t, VerdictMissing, v)

		p := st.keys.PartitionOf(ref.ScheduleID)
		n, err := rdb.Exists(testContext(t), st.keys.ScheduleKey(p, ref.ScheduleID)).Result()
		require.NoError(t, err)
		require.Zero(t, n, "a verdict for a missing schedule must not create its hash")
	})

	t.Run("stale generation", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		ref := slotOf(s, 1)
		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)
		_, err = st.ResumeSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		_, v := startExecution(t, st, ref, 0)
		require.Equal(t, VerdictStaleGeneration, v)

		current := ref
		current.Generation = getSchedule(t, st, s.ID).Generation
		mustRun(t, st, current, 0)
	})

	t.Run("stale slot", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		newer := mustRun(t, st, slotOf(s, 2), 0)
		require.True(t, finishExecution(t, st, newer, StatusSucceeded))

		_, v := startExecution(t, st, slotOf(s, 1), 0)
		require.Equal(t, VerdictStaleSlot, v)
		require.Equal(t, newer.ID, getSchedule(t, st, s.ID).LastExecutionID)
	})

	t.Run("duplicate after succeeded", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)
		require.True(t, finishExecution(t, st, e, StatusSucceeded))

		_, v := startExecution(t, st, slotOf(s, 1), 0)
		require.Equal(t, VerdictDuplicate, v)
		_, v = startExecution(t, st, slotOf(s, 1), 1)
		require.Equal(t, VerdictDuplicate, v)
		require.Equal(t, StatusSucceeded, getSchedule(t, st, s.ID).LastStatus)
	})

	t.Run("duplicate after failed", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 2)
		require.True(t, finishExecution(t, st, e, StatusFailed))

		_, v := startExecution(t, st, slotOf(s, 1), 2)
		require.Equal(t, VerdictDuplicate, v)
		require.Equal(t, StatusFailed, getSchedule(t, st, s.ID).LastStatus)
	})

	t.Run("duplicate of retried attempt", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)
		require.True(t, finishExecution(t, st, e, StatusRetrying))

		_, v := startExecution(t, st, slotOf(s, 1), 0)
		require.Equal(t, VerdictDuplicate, v)
	})

	t.Run("duplicate of earlier attempt", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		mustRun(t, st, slotOf(s, 1), 1)

		_, v := startExecution(t, st, slotOf(s, 1), 0)
		require.Equal(t, VerdictDuplicate, v)
		require.Equal(t, "1", hashField(t, st, s.ID, fieldLastAttempt))
	})

	t.Run("retry with higher attempt", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		first := mustRun(t, st, slotOf(s, 1), 0)
		require.True(t, finishExecution(t, st, first, StatusRetrying))

		retry := mustRun(t, st, slotOf(s, 1), 1)
		require.Equal(t, first.ID, retry.ID)
		require.Equal(t, 1, retry.Attempt)
		require.Equal(t, StatusRunning, getSchedule(t, st, s.ID).LastStatus)
		require.Equal(t, "1", hashField(t, st, s.ID, fieldLastAttempt))
		require.Equal(t, "1", hashField(t, st, s.ID, fieldRunningTry))
	})

	t.Run("busy while same attempt runs", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		mustRun(t, st, slotOf(s, 1), 0)

		_, v := startExecution(t, st, slotOf(s, 1), 0)
		require.Equal(t, VerdictBusy, v)
	})

	t.Run("overlap while earlier slot runs", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		earlier := mustRun(t, st, slotOf(s, 1), 0)

		_, v := startExecution(t, st, slotOf(s, 2), 0)
		require.Equal(t, VerdictOverlap, v)

		got := getSchedule(t, st, s.ID)
		require.Equal(t, earlier.ID, got.LastExecutionID)
		require.Equal(t, earlier.Slot, got.LastRunAt)
	})

	t.Run("later slot runs after finish", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		earlier := mustRun(t, st, slotOf(s, 1), 0)
		require.True(t, finishExecution(t, st, earlier, StatusSucceeded))

		later := mustRun(t, st, slotOf(s, 2), 0)
		require.Equal(t, later.ID, getSchedule(t, st, s.ID).LastExecutionID)
	})

	t.Run("same attempt runs after lease ends", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		ref := slotOf(s, 1)
		_, v, err := st.StartExecution(testContext(t), StartRequest{Slot: ref, Attempt: 0, RunningLease: time.Second})
		require.NoError(t, err)
		require.Equal(t, VerdictRun, v)

		_, v = startExecution(t, st, ref, 0)
		require.Equal(t, VerdictBusy, v, "the marker's lease has not ended yet")

		ctx := testContext(t)
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			_, v, err := st.StartExecution(ctx, StartRequest{Slot: ref, Attempt: 0, RunningLease: runningLease})
			if assert.NoError(c, err) {
				assert.Equal(c, VerdictRun, v)
			}
		}, 10*time.Second, 20*time.Millisecond)
	})

	t.Run("later slot runs after lease ends", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		_, v, err := st.StartExecution(testContext(t), StartRequest{Slot: slotOf(s, 1), Attempt: 0, RunningLease: time.Second})
		require.NoError(t, err)
		require.Equal(t, VerdictRun, v)

		ctx := testContext(t)
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			_, v, err := st.StartExecution(ctx, StartRequest{Slot: slotOf(s, 2), Attempt: 0, RunningLease: runningLease})
			if assert.NoError(c, err) {
				assert.Equal(c, VerdictRun, v)
			}
		}, 10*time.Second, 20*time.Millisecond)
		require.Equal(t, slotOf(s, 2).ExecutionID(), getSchedule(t, st, s.ID).LastExecutionID)
	})

	t.Run("interrupted allows redelivery", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)
		require.True(t, finishExecution(t, st, e, StatusInterrupted))
		require.Empty(t, hashField(t, st, s.ID, fieldRunningExec))

		again := mustRun(t, st, slotOf(s, 1), 0)
		require.Equal(t, e.ID, again.ID)
		require.Equal(t, StatusRunning, getSchedule(t, st, s.ID).LastStatus)
	})
}

func TestFinishExecution(t *testing.T) {
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	t.Run("records latest attempt", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)

		require.True(t, finishExecution(t, st, e, StatusSucceeded))

		require.Equal(t, StatusSucceeded, getSchedule(t, st, s.ID).LastStatus)
		require.Empty(t, hashField(t, st, s.ID, fieldRunningExec))
		require.Empty(t, hashField(t, st, s.ID, fieldRunningTry))
		require.Empty(t, hashField(t, st, s.ID, fieldRunningUntil))
	})

	t.Run("ignores earlier attempt", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		first := mustRun(t, st, slotOf(s, 1), 0)
		require.True(t, finishExecution(t, st, first, StatusRetrying))
		mustRun(t, st, slotOf(s, 1), 1)

		require.False(t, finishExecution(t, st, first, StatusFailed))

		require.Equal(t, StatusRunning, getSchedule(t, st, s.ID).LastStatus)
		require.Equal(t, first.ID, hashField(t, st, s.ID, fieldRunningExec))
		require.Equal(t, "1", hashField(t, st, s.ID, fieldRunningTry))
	})

	t.Run("keeps marker of later execution", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		earlier := mustRun(t, st, slotOf(s, 1), 0)
		require.True(t, finishExecution(t, st, earlier, StatusSucceeded))
		later := mustRun(t, st, slotOf(s, 2), 0)

		require.False(t, finishExecution(t, st, earlier, StatusFailed))

		got := getSchedule(t, st, s.ID)
		require.Equal(t, later.ID, got.LastExecutionID)
		require.Equal(t, StatusRunning, got.LastStatus)
		require.Equal(t, later.ID, hashField(t, st, s.ID, fieldRunningExec))
		_, v := startExecution(t, st, slotOf(s, 3), 0)
		require.Equal(t, VerdictOverlap, v)
	})

	t.Run("retry releases own marker", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		first := mustRun(t, st, slotOf(s, 1), 0)
		require.True(t, finishExecution(t, st, first, StatusRetrying))
		second := mustRun(t, st, slotOf(s, 1), 1)

		require.True(t, finishExecution(t, st, second, StatusSucceeded))

		require.Empty(t, hashField(t, st, s.ID, fieldRunningExec))
		require.Equal(t, StatusSucceeded, getSchedule(t, st, s.ID).LastStatus)
	})

	t.Run("missing schedule", func(t *testing.T) {
		e := Execution{ID: ulid.Make().String(), ScheduleID: ulid.Make().String()}

		require.False(t, finishExecution(t, st, e, StatusSucceeded))

		p := st.keys.PartitionOf(e.ScheduleID)
		n, err := rdb.Exists(testContext(t), st.keys.ScheduleKey(p, e.ScheduleID)).Result()
		require.NoError(t, err)
		require.Zero(t, n, "finishing an execution of a missing schedule must not create its hash")
	})
}
