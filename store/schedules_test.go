package store

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestConfigValidation(t *testing.T) {
	rdb := startRedis(t)
	cases := []struct {
		name string
		cfg  Config
	}{
		{"negative partitions", Config{Partitions: -1}},
		{"too many partitions", Config{Partitions: PartitionsMax + 1}},
		{"retention below one second", Config{DeletedRetention: 999 * time.Millisecond}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(rdb, tc.cfg)
			require.Error(t, err)
		})
	}

	t.Run("defaults", func(t *testing.T) {
		st, err := New(rdb, Config{})
		require.NoError(t, err)
		require.Equal(t, PrefixDefault, st.cfg.Prefix)
		require.Equal(t, PartitionsDefault, st.cfg.Partitions)
		require.Equal(t, DeletedRetentionDefault, st.cfg.DeletedRetention)
	})
}

func TestInit(t *testing.T) {
	rdb := startRedis(t)

	t.Run("records partition count", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 4})
		meta, err := rdb.HGetAll(testContext(t), st.keys.MetaKey()).Result()
		require.NoError(t, err)
		require.Equal(t, "4", meta["partitions"])
		require.Equal(t, strconv.Itoa(schemaVersion), meta["schema"])
	})

	t.Run("same count accepted again", func(t *testing.T) {
		first := newTestStore(t, rdb, Config{Partitions: 4})
		second, err := New(rdb, Config{Prefix: first.cfg.Prefix, Partitions: 4})
		require.NoError(t, err)
		require.NoError(t, second.Init(testContext(t)))
	})

	t.Run("other count rejected", func(t *testing.T) {
		first := newTestStore(t, rdb, Config{Partitions: 4})
		second, err := New(rdb, Config{Prefix: first.cfg.Prefix, Partitions: 8})
		require.NoError(t, err)

		err = second.Init(testContext(t))
		require.ErrorIs(t, err, ErrPartitionMismatch)
		require.ErrorContains(t, err, "--partitions 4")
	})

	t.Run("recorded count unchanged by mismatch", func(t *testing.T) {
		first := newTestStore(t, rdb, Config{Partitions: 4})
		second, err := New(rdb, Config{Prefix: first.cfg.Prefix, Partitions: 8})
		require.NoError(t, err)
		require.ErrorIs(t, second.Init(testContext(t)), ErrPartitionMismatch)

		got, err := rdb.HGet(testContext(t), first.keys.MetaKey(), "partitions").Result()
		require.NoError(t, err)
		require.Equal(t, "4", got)
	})

	t.Run("other schema version rejected", func(t *testing.T) {
		first := newTestStore(t, rdb, Config{Partitions: 4})
		require.NoError(t, rdb.HSet(testContext(t), first.keys.MetaKey(), "schema", schemaVersion+1).Err())

		err := first.Init(testContext(t))
		require.Error(t, err)
		require.ErrorContains(t, err, "schema version")
	})
}

func TestCreateSchedule(t *testing.T) {
	rdb := startRedis(t)

	t.Run("get returns every field", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{})
		n := newSchedule()
		n.Payload = []byte{0x00, 0xff, 0x10, '|', 0x00, 0x80}
		n.MetadataJSON = `{"env":"prod","team":"billing ü"}`
		n.Interval = 90 * time.Second

		before := serverTime(t, st)
		created := createSchedule(t, st, n)
		after := serverTime(t, st)
		got, err := st.GetSchedule(testContext(t), n.ID, n.ATSCode)
		require.NoError(t, err)

		want := &Schedule{
			ID:           n.ID,
			ATSCode:      n.ATSCode,
			HandlerName:  n.HandlerName,
			SourceURL:    n.SourceURL,
			Interval:     n.Interval,
			Payload:      n.Payload,
			MetadataJSON: n.MetadataJSON,
			State:        StateActive,
			Anchor:       created.CreatedAt,
			NextRunAt:    created.CreatedAt.Add(n.Interval),
			Generation:   1,
			CreatedAt:    created.CreatedAt,
			UpdatedAt:    created.CreatedAt,
			Options:      Options{Misfire: MisfireRunLatest, Overlap: OverlapSkip},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("stored schedule differs (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(created, got); diff != "" {
			t.Errorf("created and stored schedule differ (-created +stored):\n%s", diff)
		}

		require.Equal(t, time.UTC, got.CreatedAt.Location())
		require.Equal(t, time.UTC, got.NextRunAt.Location())
		require.True(t, got.CreatedAt.Equal(got.CreatedAt.Truncate(time.Millisecond)), "created %s has sub-millisecond digits", got.CreatedAt)
		require.False(t, got.CreatedAt.Before(before.Truncate(time.Millisecond)), "created %s before %s", got.CreatedAt, before)
		require.False(t, got.CreatedAt.After(after), "created %s after %s", got.CreatedAt, after)
		require.True(t, got.LastRunAt.IsZero())
		require.Empty(t, got.LastExecutionID)
		require.Empty(t, got.LastStatus)
	})

	t.Run("empty payload and metadata", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{})
		n := newSchedule()
		n.Payload = nil
		n.MetadataJSON = ""
		n.SourceURL = ""
		createSchedule(t, st, n)

		got := getSchedule(t, st, n.ID)
		require.Empty(t, got.Payload)
		require.Empty(t, got.MetadataJSON)
		require.Empty(t, got.SourceURL)
		require.Equal(t, n.HandlerName, got.HandlerName)
	})

	t.Run("first slot one interval after creation", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{})
		created := createSchedule(t, st, newSchedule())

		require.Equal(t, created.CreatedAt.Add(time.Hour), created.NextRunAt)
		require.Equal(t, created.NextRunAt, dueScore(t, st, created.ID))
		require.Equal(t, strconv.FormatInt(created.NextRunAt.UnixMilli(), 10), hashField(t, st, created.ID, fieldNextMS))
	})

	t.Run("run immediately makes first slot creation", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{})
		n := newSchedule()
		n.RunImmediately = true
		created := createSchedule(t, st, n)
		got := getSchedule(t, st, n.ID)

		require.Equal(t, created.CreatedAt, created.NextRunAt)
		require.Equal(t, got.CreatedAt, got.NextRunAt)
		require.Equal(t, got.CreatedAt, got.Anchor)
		require.Equal(t, got.CreatedAt, dueScore(t, st, n.ID))
	})

	t.Run("one due entry", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{Partitions: 8})
		created := createSchedule(t, st, newSchedule())
		require.Equal(t, 1, dueEntries(t, st, created.ID))
	})

	t.Run("existing ID rejected", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{})
		n := newSchedule()
		createSchedule(t, st, n)

		other := newSchedule()
		other.ID = n.ID
		other.ATSCode = "beta"
		_, err := st.CreateSchedule(testContext(t), other)
		require.ErrorIs(t, err, ErrAlreadyExists)
		require.Equal(t, "alpha", getSchedule(t, st, n.ID).ATSCode)
	})

	t.Run("interval below one millisecond rejected", func(t *testing.T) {
		st := newTestStore(t, rdb, Config{})
		n := newSchedule()
		n.Interval = time.Microsecond
		_, err := st.CreateSchedule(testContext(t), n)
		require.Error(t, err)
		require.Equal(t, 0, dueEntries(t, st, n.ID))
	})
}

func TestGetSchedule(t *testing.T) {
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{})
	created := createSchedule(t, st, newSchedule())

	t.Run("owner reads", func(t *testing.T) {
		got, err := st.GetSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)
		require.Equal(t, created.ID, got.ID)
	})

	t.Run("empty owner reads any", func(t *testing.T) {
		got, err := st.GetSchedule(testContext(t), created.ID, "")
		require.NoError(t, err)
		require.Equal(t, "alpha", got.ATSCode)
	})

	t.Run("other owner not found", func(t *testing.T) {
		_, err := st.GetSchedule(testContext(t), created.ID, "beta")
		require.ErrorIs(t, err, ErrNotFound)
	})

	t.Run("unknown ID not found", func(t *testing.T) {
		_, err := st.GetSchedule(testContext(t), ulid.Make().String(), "")
		require.ErrorIs(t, err, ErrNotFound)
	})

	t.Run("damaged spec reported", func(t *testing.T) {
		damaged := createSchedule(t, st, newSchedule())
		p := st.keys.PartitionOf(damaged.ID)
		require.NoError(t, rdb.Set(testContext(t), st.keys.SpecKey(p, damaged.ID), "garbage", 0).Err())

		_, err := st.GetSchedule(testContext(t), damaged.ID, "")
		require.ErrorIs(t, err, errBadSpec)
	})
}

func TestPauseSchedule(t *testing.T) {
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	t.Run("active to paused", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())

		changed, err := st.PauseSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)
		require.True(t, changed)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StatePaused, got.State)
		require.Equal(t, int64(2), got.Generation)
		require.True(t, got.NextRunAt.IsZero(), "paused schedule has next run %s", got.NextRunAt)
		require.False(t, got.UpdatedAt.Before(created.UpdatedAt))
		require.Equal(t, 0, dueEntries(t, st, created.ID))
	})

	t.Run("repeat unchanged", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.PauseSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		changed, err := st.PauseSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)
		require.False(t, changed)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StatePaused, got.State)
		require.Equal(t, int64(2), got.Generation)
		require.Equal(t, 0, dueEntries(t, st, created.ID))
	})

	t.Run("any owner with empty owner", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		changed, err := st.PauseSchedule(testContext(t), created.ID, "")
		require.NoError(t, err)
		require.True(t, changed)
	})

	t.Run("wrong owner not found", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())

		_, err := st.PauseSchedule(testContext(t), created.ID, "beta")
		require.ErrorIs(t, err, ErrNotFound)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StateActive, got.State)
		require.Equal(t, int64(1), got.Generation)
		require.Equal(t, 1, dueEntries(t, st, created.ID))
	})

	t.Run("unknown ID not found", func(t *testing.T) {
		_, err := st.PauseSchedule(testContext(t), ulid.Make().String(), "alpha")
		require.ErrorIs(t, err, ErrNotFound)
	})

	t.Run("deleted rejected", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.DeleteSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		_, err = st.PauseSchedule(testContext(t), created.ID, "alpha")
		require.ErrorIs(t, err, ErrDeleted)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StateDeleted, got.State)
		require.Equal(t, int64(2), got.Generation)
	})
}

func TestResumeSchedule(t *testing.T) {
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	t.Run("paused to active on grid", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.PauseSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		// Move the anchor ten and a half intervals back, so the next slot
		// must come from the grid, not from the creation time.
		anchor := serverTime(t, st).Add(-10*time.Hour - 30*time.Minute).Truncate(time.Millisecond)
		p := st.keys.PartitionOf(created.ID)
		require.NoError(t, rdb.HSet(testContext(t), st.keys.ScheduleKey(p, created.ID), fieldAnchorMS, anchor.UnixMilli()).Err())

		changed, err := st.ResumeSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)
		require.True(t, changed)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StateActive, got.State)
		require.Equal(t, int64(3), got.Generation)
		require.Equal(t, 1, dueEntries(t, st, created.ID))
		require.Equal(t, got.NextRunAt, dueScore(t, st, created.ID))

		// UpdatedAt is the Redis time of the resume.
		resumedAt := got.UpdatedAt
		offset := got.NextRunAt.Sub(anchor)
		require.Zero(t, offset%time.Hour, "next run %s is not on the grid of anchor %s", got.NextRunAt, anchor)
		require.True(t, got.NextRunAt.After(resumedAt), "next run %s is not after the resume at %s", got.NextRunAt, resumedAt)
		require.False(t, got.NextRunAt.Add(-time.Hour).After(resumedAt), "next run %s skips a grid slot after %s", got.NextRunAt, resumedAt)
		require.Equal(t, anchor.Add(11*time.Hour), got.NextRunAt)
	})

	t.Run("next slot strictly after resume time", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.PauseSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		// With a 1ms interval every millisecond is a grid slot, so the
		// resume time itself lies on the grid and must be passed over.
		p := st.keys.PartitionOf(created.ID)
		require.NoError(t, rdb.HSet(testContext(t), st.keys.ScheduleKey(p, created.ID), fieldIntervalMS, 1).Err())

		_, err = st.ResumeSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, got.UpdatedAt.Add(time.Millisecond), got.NextRunAt)
	})

	t.Run("active repeat unchanged", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())

		changed, err := st.ResumeSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)
		require.False(t, changed)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, int64(1), got.Generation)
		require.Equal(t, created.NextRunAt, got.NextRunAt)
		require.Equal(t, 1, dueEntries(t, st, created.ID))
		require.Equal(t, created.NextRunAt, dueScore(t, st, created.ID))
	})

	t.Run("wrong owner not found", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.PauseSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		_, err = st.ResumeSchedule(testContext(t), created.ID, "beta")
		require.ErrorIs(t, err, ErrNotFound)
		require.Equal(t, StatePaused, getSchedule(t, st, created.ID).State)
		require.Equal(t, 0, dueEntries(t, st, created.ID))
	})

	t.Run("deleted rejected", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.DeleteSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		_, err = st.ResumeSchedule(testContext(t), created.ID, "alpha")
		require.ErrorIs(t, err, ErrDeleted)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StateDeleted, got.State)
		require.Equal(t, 0, dueEntries(t, st, created.ID))
	})
}

func TestDeleteSchedule(t *testing.T) {
	rdb := startRedis(t)
	const retention = 2 * time.Hour
	st := newTestStore(t, rdb, Config{Partitions: 4, DeletedRetention: retention})

	requireRetentionTTL := func(t *testing.T, key string) {
		t.Helper()
		ttl, err := rdb.PTTL(testContext(t), key).Result()
		require.NoError(t, err)
		require.LessOrEqual(t, ttl, retention, "TTL of %s", key)
		require.Greater(t, ttl, retention-time.Minute, "TTL of %s", key)
	}

	t.Run("active to deleted", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())

		changed, err := st.DeleteSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)
		require.True(t, changed)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StateDeleted, got.State)
		require.Equal(t, int64(2), got.Generation)
		require.True(t, got.NextRunAt.IsZero())
		require.Equal(t, 0, dueEntries(t, st, created.ID))
		require.Equal(t, created.HandlerName, got.HandlerName)
		require.Equal(t, created.Payload, got.Payload)
	})

	t.Run("TTL on both keys", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.DeleteSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		p := st.keys.PartitionOf(created.ID)
		requireRetentionTTL(t, st.keys.ScheduleKey(p, created.ID))
		requireRetentionTTL(t, st.keys.SpecKey(p, created.ID))
	})

	t.Run("paused to deleted", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.PauseSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		changed, err := st.DeleteSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)
		require.True(t, changed)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StateDeleted, got.State)
		require.Equal(t, int64(3), got.Generation)
		require.Equal(t, 0, dueEntries(t, st, created.ID))
	})

	t.Run("repeat unchanged", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())
		_, err := st.DeleteSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		changed, err := st.DeleteSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)
		require.False(t, changed)
		require.Equal(t, int64(2), getSchedule(t, st, created.ID).Generation)
	})

	t.Run("wrong owner not found", func(t *testing.T) {
		created := createSchedule(t, st, newSchedule())

		_, err := st.DeleteSchedule(testContext(t), created.ID, "beta")
		require.ErrorIs(t, err, ErrNotFound)

		got := getSchedule(t, st, created.ID)
		require.Equal(t, StateActive, got.State)
		require.Equal(t, 1, dueEntries(t, st, created.ID))
		ttl, err := rdb.PTTL(testContext(t), st.keys.ScheduleKey(st.keys.PartitionOf(created.ID), created.ID)).Result()
		require.NoError(t, err)
		require.Equal(t, time.Duration(-1), ttl)
	})

	t.Run("unknown ID not found", func(t *testing.T) {
		_, err := st.DeleteSchedule(testContext(t), ulid.Make().String(), "")
		require.True(t, errors.Is(err, ErrNotFound), "error %v", err)
	})

	t.Run("removed after retention", func(t *testing.T) {
		short := newTestStore(t, rdb, Config{DeletedRetention: time.Second})
		created := createSchedule(t, short, newSchedule())
		_, err := short.DeleteSchedule(testContext(t), created.ID, "alpha")
		require.NoError(t, err)

		require.Eventually(t, func() bool {
			_, err := short.GetSchedule(testContext(t), created.ID, "")
			return errors.Is(err, ErrNotFound)
		}, 10*time.Second, 50*time.Millisecond)

		p := short.keys.PartitionOf(created.ID)
		n, err := rdb.Exists(testContext(t), short.keys.ScheduleKey(p, created.ID), short.keys.SpecKey(p, created.ID)).Result()
		require.NoError(t, err)
		require.Zero(t, n)
	})
}
