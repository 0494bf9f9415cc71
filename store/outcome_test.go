package store

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// finishWith records an outcome with an error text and returns the result.
func finishWith(t *testing.T, st *Store, e Execution, status ExecutionStatus, errText string) FinishResult {
	t.Helper()
	res, err := st.FinishExecution(testContext(t), FinishRequest{Execution: e, Status: status, Error: errText})
	require.NoError(t, err)
	return res
}

// failSlot runs slot k of s and records it as failed.
func failSlot(t *testing.T, st *Store, s *Schedule, k int) FinishResult {
	t.Helper()
	e := mustRun(t, st, slotOf(s, k), 0)
	return finishWith(t, st, e, StatusFailed, "boom")
}

// errorKeyExists reports whether the error key of a schedule exists.
func errorKeyExists(t *testing.T, st *Store, id string) bool {
	t.Helper()
	n, err := st.rdb.Exists(testContext(t), st.keys.ErrorKey(st.keys.PartitionOf(id), id)).Result()
	require.NoError(t, err)
	return n == 1
}

// inPausedSet reports whether a schedule is in its partition's paused set.
func inPausedSet(t *testing.T, st *Store, id string) bool {
	t.Helper()
	ok, err := st.rdb.SIsMember(testContext(t), st.keys.PausedKey(st.keys.PartitionOf(id)), id).Result()
	require.NoError(t, err)
	return ok
}

func TestFinishOutcome(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	t.Run("succeeded clears failures and error", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		failSlot(t, st, s, 1)
		e := mustRun(t, st, slotOf(s, 2), 0)

		res := finishWith(t, st, e, StatusSucceeded, "")

		require.True(t, res.Recorded, "recorded")
		got := getSchedule(t, st, s.ID)
		require.Equal(t, StatusSucceeded, got.LastStatus, "last status")
		require.Zero(t, got.ConsecutiveFailures, "consecutive failures")
		require.Empty(t, got.LastError, "last error")
		require.False(t, errorKeyExists(t, st, s.ID), "error key exists")
		require.Empty(t, hashField(t, st, s.ID, fieldFailures), "failure count field")
	})

	t.Run("retrying stores error keeps count", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		failSlot(t, st, s, 1)
		e := mustRun(t, st, slotOf(s, 2), 0)

		res := finishWith(t, st, e, StatusRetrying, "try again")

		require.True(t, res.Recorded, "recorded")
		require.False(t, res.Paused, "paused")
		got := getSchedule(t, st, s.ID)
		require.Equal(t, StatusRetrying, got.LastStatus, "last status")
		require.Equal(t, "try again", got.LastError, "last error")
		require.Equal(t, int64(1), got.ConsecutiveFailures, "consecutive failures")
	})

	t.Run("failed counts and stores error", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		failSlot(t, st, s, 1)
		e := mustRun(t, st, slotOf(s, 2), 0)

		res := finishWith(t, st, e, StatusFailed, "second failure")

		require.True(t, res.Recorded, "recorded")
		require.False(t, res.Paused, "paused")
		got := getSchedule(t, st, s.ID)
		require.Equal(t, StatusFailed, got.LastStatus, "last status")
		require.Equal(t, "second failure", got.LastError, "last error")
		require.Equal(t, int64(2), got.ConsecutiveFailures, "consecutive failures")
	})

	t.Run("interrupted keeps error and count", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		failSlot(t, st, s, 1)
		e := mustRun(t, st, slotOf(s, 2), 0)

		finishWith(t, st, e, StatusInterrupted, "")

		got := getSchedule(t, st, s.ID)
		require.Equal(t, StatusInterrupted, got.LastStatus, "last status")
		require.Equal(t, "boom", got.LastError, "last error")
		require.Equal(t, int64(1), got.ConsecutiveFailures, "consecutive failures")
	})

	t.Run("error cut to ErrorMaxBytes", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)
		long := strings.Repeat("x", ErrorMaxBytes+100)

		finishWith(t, st, e, StatusFailed, long)

		require.Equal(t, long[:ErrorMaxBytes], getSchedule(t, st, s.ID).LastError)
	})

	t.Run("error cut on a rune boundary", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)
		// 683 three-byte runes are 2049 bytes, so a cut at ErrorMaxBytes
		// falls inside the last one.
		long := strings.Repeat("€", 683)

		finishWith(t, st, e, StatusFailed, long)

		got := getSchedule(t, st, s.ID).LastError
		require.True(t, utf8.ValidString(got), "stored error is not valid UTF-8")
		require.Equal(t, strings.Repeat("€", 682), got)
	})

	t.Run("invalid UTF-8 in error replaced", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)

		finishWith(t, st, e, StatusFailed, "bad \xff byte")

		got := getSchedule(t, st, s.ID).LastError
		require.True(t, utf8.ValidString(got), "stored error is not valid UTF-8")
		require.Equal(t, "bad \uFFFD byte", got)
	})

	t.Run("total runs count new slots only", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		first := mustRun(t, st, slotOf(s, 1), 0)
		finishWith(t, st, first, StatusRetrying, "again")
		retry := mustRun(t, st, slotOf(s, 1), 1)
		finishWith(t, st, retry, StatusInterrupted, "")
		redelivery := mustRun(t, st, slotOf(s, 1), 1)
		finishWith(t, st, redelivery, StatusSucceeded, "")
		require.Equal(t, int64(1), getSchedule(t, st, s.ID).TotalRuns, "total runs after one slot")

		mustRun(t, st, slotOf(s, 2), 0)

		require.Equal(t, int64(2), getSchedule(t, st, s.ID).TotalRuns, "total runs after two slots")
	})

	t.Run("keep marker keeps running marker", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)

		res, err := st.FinishExecution(testContext(t), FinishRequest{Execution: e, Status: StatusSucceeded, KeepMarker: true})

		require.NoError(t, err)
		require.True(t, res.Recorded, "recorded")
		require.Equal(t, StatusSucceeded, getSchedule(t, st, s.ID).LastStatus, "last status")
		require.Equal(t, e.ID, hashField(t, st, s.ID, fieldRunningExec), "marker holder")
		require.Equal(t, "0", hashField(t, st, s.ID, fieldRunningTry), "marker attempt")
		require.NotEmpty(t, hashField(t, st, s.ID, fieldRunningUntil), "marker lease")
	})

	t.Run("release marker by holder", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)

		require.NoError(t, st.ReleaseMarker(testContext(t), e))

		require.Empty(t, hashField(t, st, s.ID, fieldRunningExec), "marker holder")
		require.Empty(t, hashField(t, st, s.ID, fieldRunningTry), "marker attempt")
		require.Empty(t, hashField(t, st, s.ID, fieldRunningUntil), "marker lease")
		require.Equal(t, StatusRunning, getSchedule(t, st, s.ID).LastStatus, "last status")
	})

	t.Run("release marker by other execution", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)
		other := e
		other.ID = slotOf(s, 2).ExecutionID()

		require.NoError(t, st.ReleaseMarker(testContext(t), other))

		require.Equal(t, e.ID, hashField(t, st, s.ID, fieldRunningExec), "marker holder")
	})

	t.Run("release marker by other attempt", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 1)
		earlier := e
		earlier.Attempt = 0

		require.NoError(t, st.ReleaseMarker(testContext(t), earlier))

		require.Equal(t, e.ID, hashField(t, st, s.ID, fieldRunningExec), "marker holder")
		require.Equal(t, "1", hashField(t, st, s.ID, fieldRunningTry), "marker attempt")
	})

	t.Run("release marker of missing schedule", func(t *testing.T) {
		e := Execution{ID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q3"}

		require.NoError(t, st.ReleaseMarker(testContext(t), e))

		p := st.keys.PartitionOf(e.ScheduleID)
		n, err := rdb.Exists(testContext(t), st.keys.ScheduleKey(p, e.ScheduleID)).Result()
		require.NoError(t, err)
		require.Zero(t, n, "releasing a marker must not create the schedule's hash")
	})
}

func TestPauseAfterFailures(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})
	const limit = 3

	t.Run("active below the count", func(t *testing.T) {
		s := createWithOptions(t, st, Options{PauseAfterFailures: limit})
		for k := 1; k < limit; k++ {
			res := failSlot(t, st, s, k)
			require.False(t, res.Paused, "paused after %d failures", k)
		}

		got := getSchedule(t, st, s.ID)
		require.Equal(t, StateActive, got.State, "state")
		require.Equal(t, int64(limit-1), got.ConsecutiveFailures, "consecutive failures")
		require.Empty(t, got.PausedReason, "paused reason")
		require.Equal(t, 1, dueEntries(t, st, s.ID), "due entries")
	})

	t.Run("paused at the count", func(t *testing.T) {
		s := createWithOptions(t, st, Options{PauseAfterFailures: limit})
		for k := 1; k < limit; k++ {
			failSlot(t, st, s, k)
		}

		res := failSlot(t, st, s, limit)

		require.True(t, res.Recorded, "recorded")
		require.True(t, res.Paused, "paused")
		got := getSchedule(t, st, s.ID)
		require.Equal(t, StatePaused, got.State, "state")
		require.Equal(t, "paused after 3 consecutive failed executions", got.PausedReason, "paused reason")
		require.Equal(t, int64(limit), got.ConsecutiveFailures, "consecutive failures")
		require.Equal(t, int64(2), got.Generation, "generation")
		require.True(t, got.NextRunAt.IsZero(), "next run %s", got.NextRunAt)
		require.Equal(t, 0, dueEntries(t, st, s.ID), "due entries")
		require.True(t, inPausedSet(t, st, s.ID), "in the paused set")
	})

	t.Run("success resets the count", func(t *testing.T) {
		s := createWithOptions(t, st, Options{PauseAfterFailures: limit})
		failSlot(t, st, s, 1)
		failSlot(t, st, s, 2)
		e := mustRun(t, st, slotOf(s, 3), 0)
		finishWith(t, st, e, StatusSucceeded, "")

		res := failSlot(t, st, s, 4)

		require.False(t, res.Paused, "paused")
		require.Equal(t, StateActive, getSchedule(t, st, s.ID).State, "state")
	})

	t.Run("retries do not count", func(t *testing.T) {
		s := createWithOptions(t, st, Options{PauseAfterFailures: 1})
		e := mustRun(t, st, slotOf(s, 1), 0)

		res := finishWith(t, st, e, StatusRetrying, "again")

		require.False(t, res.Paused, "paused")
		require.Equal(t, StateActive, getSchedule(t, st, s.ID).State, "state")
	})

	t.Run("zero never pauses", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		for k := 1; k <= 5; k++ {
			failSlot(t, st, s, k)
		}

		got := getSchedule(t, st, s.ID)
		require.Equal(t, StateActive, got.State, "state")
		require.Equal(t, int64(5), got.ConsecutiveFailures, "consecutive failures")
	})

	t.Run("client-paused schedule not paused again", func(t *testing.T) {
		s := createWithOptions(t, st, Options{PauseAfterFailures: 1})
		e := mustRun(t, st, slotOf(s, 1), 0)
		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		res := finishWith(t, st, e, StatusFailed, "boom")

		require.True(t, res.Recorded, "recorded")
		require.False(t, res.Paused, "paused")
		got := getSchedule(t, st, s.ID)
		require.Empty(t, got.PausedReason, "paused reason")
		require.Equal(t, int64(2), got.Generation, "generation")
	})

	t.Run("resume clears reason and count", func(t *testing.T) {
		s := createWithOptions(t, st, Options{PauseAfterFailures: 1})
		require.True(t, failSlot(t, st, s, 1).Paused)

		changed, err := st.ResumeSchedule(testContext(t), s.ID, "")

		require.NoError(t, err)
		require.True(t, changed, "changed")
		got := getSchedule(t, st, s.ID)
		require.Equal(t, StateActive, got.State, "state")
		require.Empty(t, got.PausedReason, "paused reason")
		require.Zero(t, got.ConsecutiveFailures, "consecutive failures")
		require.False(t, inPausedSet(t, st, s.ID), "in the paused set")
		require.Equal(t, 1, dueEntries(t, st, s.ID), "due entries")
	})

	t.Run("resume of client pause keeps count", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		failSlot(t, st, s, 1)
		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		_, err = st.ResumeSchedule(testContext(t), s.ID, "")

		require.NoError(t, err)
		require.Equal(t, int64(1), getSchedule(t, st, s.ID).ConsecutiveFailures, "consecutive failures")
	})

	t.Run("delete clears reason", func(t *testing.T) {
		s := createWithOptions(t, st, Options{PauseAfterFailures: 1})
		require.True(t, failSlot(t, st, s, 1).Paused)

		_, err := st.DeleteSchedule(testContext(t), s.ID, "")

		require.NoError(t, err)
		got := getSchedule(t, st, s.ID)
		require.Equal(t, StateDeleted, got.State, "state")
		require.Empty(t, got.PausedReason, "paused reason")
		require.False(t, inPausedSet(t, st, s.ID), "in the paused set")
	})
}

func TestErrorKeyTTL(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)
	const retention = 2 * time.Hour
	st := newTestStore(t, rdb, Config{Partitions: 4, DeletedRetention: retention})

	errorTTL := func(t *testing.T, id string) time.Duration {
		t.Helper()
		ttl, err := rdb.PTTL(testContext(t), st.keys.ErrorKey(st.keys.PartitionOf(id), id)).Result()
		require.NoError(t, err)
		return ttl
	}

	t.Run("no TTL while not deleted", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		failSlot(t, st, s, 1)

		require.Equal(t, time.Duration(-1), errorTTL(t, s.ID))
	})

	t.Run("delete sets TTL", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		failSlot(t, st, s, 1)

		_, err := st.DeleteSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		ttl := errorTTL(t, s.ID)
		require.LessOrEqual(t, ttl, retention, "TTL")
		require.Greater(t, ttl, retention-time.Minute, "TTL")
	})

	t.Run("failure after delete inherits TTL", func(t *testing.T) {
		s := createSchedule(t, st, newSchedule())
		e := mustRun(t, st, slotOf(s, 1), 0)
		_, err := st.DeleteSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		res := finishWith(t, st, e, StatusFailed, "boom")

		require.True(t, res.Recorded, "recorded")
		ttl := errorTTL(t, s.ID)
		require.LessOrEqual(t, ttl, retention, "TTL")
		require.Greater(t, ttl, retention-time.Minute, "TTL")
	})

	t.Run("removed with the schedule", func(t *testing.T) {
		short := newTestStore(t, rdb, Config{DeletedRetention: time.Second})
		s := createSchedule(t, short, newSchedule())
		failSlot(t, short, s, 1)
		_, err := short.DeleteSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		key := short.keys.ErrorKey(short.keys.PartitionOf(s.ID), s.ID)
		ctx := testContext(t)
		require.Eventually(t, func() bool {
			return errors.Is(rdb.Get(ctx, key).Err(), redis.Nil)
		}, 10*time.Second, 50*time.Millisecond)
	})
}
