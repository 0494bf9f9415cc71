package store

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startWith starts an attempt with the given lease and predecessor.
func startWith(t *testing.T, st *Store, r SlotRef, lease time.Duration, predecessor string) (Execution, Verdict) {
	t.Helper()
	e, v, err := st.StartExecution(testContext(t), StartRequest{Slot: r, RunningLease: lease, Predecessor: predecessor})
	require.NoError(t, err)
	return e, v
}

func TestStartOverlap(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	t.Run("skip counts overlap", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapSkip})
		mustRun(t, st, slotOf(s, 1), 0)

		_, v := startExecution(t, st, slotOf(s, 2), 0)

		require.Equal(t, VerdictOverlap, v)
		require.Equal(t, int64(1), getSchedule(t, st, s.ID).SkippedSlots, "skipped slots")
		require.Equal(t, int64(1), getSchedule(t, st, s.ID).TotalRuns, "total runs")
	})

	t.Run("allow runs beside marker", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapAllow})
		earlier := mustRun(t, st, slotOf(s, 1), 0)

		later, v := startExecution(t, st, slotOf(s, 2), 0)

		require.Equal(t, VerdictRun, v)
		got := getSchedule(t, st, s.ID)
		require.Equal(t, later.ID, got.LastExecutionID, "latest execution")
		require.Equal(t, later.ID, hashField(t, st, s.ID, fieldRunningExec), "marker holder")
		require.Zero(t, got.SkippedSlots, "skipped slots")
		require.Equal(t, int64(2), got.TotalRuns, "total runs")

		// The earlier execution's end neither records nor frees the later
		// one's marker.
		require.False(t, finishExecution(t, st, earlier, StatusSucceeded), "earlier outcome recorded")
		require.Equal(t, later.ID, hashField(t, st, s.ID, fieldRunningExec), "marker holder after the earlier end")
	})

	t.Run("buffer_one buffers first later slot", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapBufferOne})
		mustRun(t, st, slotOf(s, 1), 0)

		_, v := startExecution(t, st, slotOf(s, 2), 0)

		require.Equal(t, VerdictBusy, v)
		require.Equal(t, slotOf(s, 2).ExecutionID(), hashField(t, st, s.ID, fieldBuffered), "buffered execution")
		require.NotEmpty(t, hashField(t, st, s.ID, fieldBufferedUntil), "buffer lease")
		require.Zero(t, getSchedule(t, st, s.ID).SkippedSlots, "skipped slots")
	})

	t.Run("buffer_one skips second later slot", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapBufferOne})
		mustRun(t, st, slotOf(s, 1), 0)
		_, v := startExecution(t, st, slotOf(s, 2), 0)
		require.Equal(t, VerdictBusy, v)

		_, v = startExecution(t, st, slotOf(s, 3), 0)

		require.Equal(t, VerdictOverlap, v)
		require.Equal(t, int64(1), getSchedule(t, st, s.ID).SkippedSlots, "skipped slots")
		require.Equal(t, slotOf(s, 2).ExecutionID(), hashField(t, st, s.ID, fieldBuffered), "buffered execution")
	})

	t.Run("buffer_one keeps buffer on redelivery", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapBufferOne})
		mustRun(t, st, slotOf(s, 1), 0)
		_, v := startExecution(t, st, slotOf(s, 2), 0)
		require.Equal(t, VerdictBusy, v)

		_, v = startExecution(t, st, slotOf(s, 2), 0)

		require.Equal(t, VerdictBusy, v)
		require.Zero(t, getSchedule(t, st, s.ID).SkippedSlots, "skipped slots")
	})

	t.Run("buffer_one runs buffered slot after release", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapBufferOne})
		earlier := mustRun(t, st, slotOf(s, 1), 0)
		_, v := startExecution(t, st, slotOf(s, 2), 0)
		require.Equal(t, VerdictBusy, v)
		require.True(t, finishExecution(t, st, earlier, StatusSucceeded))

		buffered, v := startExecution(t, st, slotOf(s, 2), 0)

		require.Equal(t, VerdictRun, v)
		got := getSchedule(t, st, s.ID)
		require.Equal(t, buffered.ID, got.LastExecutionID, "latest execution")
		require.Empty(t, hashField(t, st, s.ID, fieldBuffered), "buffered execution")
		require.Empty(t, hashField(t, st, s.ID, fieldBufferedUntil), "buffer lease")
		require.Equal(t, int64(2), got.TotalRuns, "total runs")
		require.Zero(t, got.SkippedSlots, "skipped slots")
	})

	t.Run("buffer_one later slot waits", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapBufferOne})
		earlier := mustRun(t, st, slotOf(s, 1), 0)
		_, v := startExecution(t, st, slotOf(s, 2), 0)
		require.Equal(t, VerdictBusy, v)
		require.True(t, finishExecution(t, st, earlier, StatusSucceeded))

		// Slot 3 comes before the redelivery of the buffered slot 2: slot 2
		// goes first, so it is neither lost nor left uncounted.
		_, v = startExecution(t, st, slotOf(s, 3), 0)
		require.Equal(t, VerdictBusy, v, "verdict of the later slot")

		mustRun(t, st, slotOf(s, 2), 0)
		require.Equal(t, slotOf(s, 2).ExecutionID(), getSchedule(t, st, s.ID).LastExecutionID, "latest execution")
	})

	t.Run("buffer_one earlier slot runs first", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapBufferOne})
		earlier := mustRun(t, st, slotOf(s, 1), 0)
		_, v := startExecution(t, st, slotOf(s, 3), 0)
		require.Equal(t, VerdictBusy, v)
		require.True(t, finishExecution(t, st, earlier, StatusSucceeded))

		mustRun(t, st, slotOf(s, 2), 0)

		_, v = startExecution(t, st, slotOf(s, 3), 0)
		require.Equal(t, VerdictBusy, v, "verdict of the buffered slot")
		require.Equal(t, slotOf(s, 3).ExecutionID(), hashField(t, st, s.ID, fieldBuffered), "buffered execution")
	})

	t.Run("buffer_one buffer expires after lease", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapBufferOne})
		mustRun(t, st, slotOf(s, 1), 0)
		_, v := startWith(t, st, slotOf(s, 2), time.Second, "")
		require.Equal(t, VerdictBusy, v)
		until, err := strconv.ParseInt(hashField(t, st, s.ID, fieldBufferedUntil), 10, 64)
		require.NoError(t, err)
		require.LessOrEqual(t, msToTime(until), serverTime(t, st).Add(time.Second), "buffer lease end")

		// Once the buffer's lease ends, the next later slot takes the
		// buffer and the first one is skipped when it comes again.
		ctx := testContext(t)
		require.Eventually(t, func() bool {
			now, err := st.ServerTime(ctx)
			return err == nil && now.After(msToTime(until))
		}, 10*time.Second, 20*time.Millisecond)
		_, v = startExecution(t, st, slotOf(s, 3), 0)
		require.Equal(t, VerdictBusy, v, "verdict of the next later slot")
		require.Equal(t, slotOf(s, 3).ExecutionID(), hashField(t, st, s.ID, fieldBuffered), "buffered execution")

		_, v = startExecution(t, st, slotOf(s, 2), 0)
		require.Equal(t, VerdictOverlap, v, "verdict of the expired buffered slot")
		require.Equal(t, int64(1), getSchedule(t, st, s.ID).SkippedSlots, "skipped slots")
	})

	t.Run("buffer cleared by pause", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapBufferOne})
		mustRun(t, st, slotOf(s, 1), 0)
		_, v := startExecution(t, st, slotOf(s, 2), 0)
		require.Equal(t, VerdictBusy, v)

		_, err := st.PauseSchedule(testContext(t), s.ID, "")
		require.NoError(t, err)

		require.Empty(t, hashField(t, st, s.ID, fieldBuffered), "buffered execution")
		require.Empty(t, hashField(t, st, s.ID, fieldBufferedUntil), "buffer lease")
	})

	t.Run("predecessor hands marker over", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapSkip})
		first := mustRun(t, st, slotOf(s, 1), 0)
		res, err := st.FinishExecution(testContext(t), FinishRequest{Execution: first, Status: StatusSucceeded, KeepMarker: true})
		require.NoError(t, err)
		require.True(t, res.Recorded)

		second, v := startWith(t, st, slotOf(s, 2), runningLease, first.ID)

		require.Equal(t, VerdictRun, v)
		require.Equal(t, second.ID, hashField(t, st, s.ID, fieldRunningExec), "marker holder")
		require.Zero(t, getSchedule(t, st, s.ID).SkippedSlots, "skipped slots")
	})

	t.Run("kept marker blocks slot without predecessor", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapSkip})
		first := mustRun(t, st, slotOf(s, 1), 0)
		_, err := st.FinishExecution(testContext(t), FinishRequest{Execution: first, Status: StatusSucceeded, KeepMarker: true})
		require.NoError(t, err)

		_, v := startExecution(t, st, slotOf(s, 2), 0)

		require.Equal(t, VerdictOverlap, v)
		require.Equal(t, first.ID, hashField(t, st, s.ID, fieldRunningExec), "marker holder")
	})

	t.Run("wrong predecessor does not take marker", func(t *testing.T) {
		s := createWithOptions(t, st, Options{Overlap: OverlapSkip})
		first := mustRun(t, st, slotOf(s, 1), 0)

		_, v := startWith(t, st, slotOf(s, 3), runningLease, slotOf(s, 2).ExecutionID())

		require.Equal(t, VerdictOverlap, v)
		require.Equal(t, first.ID, hashField(t, st, s.ID, fieldRunningExec), "marker holder")
	})
}
