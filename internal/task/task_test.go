package task

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/store"
)

// testSlot returns a task of count slots one minute apart.
func testSlot(count int) Slot {
	return Slot{
		SlotRef: store.SlotRef{
			ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2",
			Slot:       time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC),
			Generation: 4,
		},
		Count:    count,
		Interval: time.Minute,
		Timeout:  45 * time.Second,
		MaxRetry: 2,
	}
}

func TestRoundTrip(t *testing.T) {
	t.Run("single slot", func(t *testing.T) {
		s := testSlot(1)
		s.Interval = 0

		got, err := Decode(Encode(s))

		require.NoError(t, err)
		require.Equal(t, s, got)
	})

	t.Run("single slot drops interval", func(t *testing.T) {
		got, err := Decode(Encode(testSlot(1)))

		require.NoError(t, err)
		require.Equal(t, 1, got.Count, "count")
		require.Zero(t, got.Interval, "interval")
	})

	t.Run("range", func(t *testing.T) {
		s := testSlot(5)

		got, err := Decode(Encode(s))

		require.NoError(t, err)
		require.Equal(t, s, got)
	})

	t.Run("slot in UTC", func(t *testing.T) {
		s := testSlot(1)
		s.Slot = s.Slot.In(time.FixedZone("UTC+2", 2*60*60))

		got, err := Decode(Encode(s))

		require.NoError(t, err)
		require.True(t, got.Slot.Equal(s.Slot), "slot %s, want %s", got.Slot, s.Slot)
		require.Equal(t, time.UTC, got.Slot.Location(), "location")
	})

	t.Run("zero retries", func(t *testing.T) {
		s := testSlot(1)
		s.Interval = 0
		s.MaxRetry = 0

		got, err := Decode(Encode(s))

		require.NoError(t, err)
		require.Equal(t, s, got)
	})

	t.Run("same slots after decode", func(t *testing.T) {
		s := testSlot(3)

		got, err := Decode(Encode(s))

		require.NoError(t, err)
		require.Equal(t, s.Slots(), got.Slots())
	})
}

func TestEncodeFormat(t *testing.T) {
	t.Run("single slot fields", func(t *testing.T) {
		var fields map[string]any
		require.NoError(t, json.Unmarshal(Encode(testSlot(1)), &fields))

		require.Equal(t, map[string]any{
			"schedule_id": "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2",
			"slot_ms":     float64(1741964966535),
			"generation":  float64(4),
			"timeout_ms":  float64(45000),
			"max_retry":   float64(2),
		}, fields)
	})

	t.Run("range fields", func(t *testing.T) {
		var fields map[string]any
		require.NoError(t, json.Unmarshal(Encode(testSlot(3)), &fields))

		require.Equal(t, float64(3), fields["count"], "count")
		require.Equal(t, float64(60000), fields["interval_ms"], "interval_ms")
	})
}

func TestDecodeRejects(t *testing.T) {
	cases := []struct {
		name    string
		payload string
		want    string
	}{
		{"empty", ``, "decode slot task payload"},
		{"not JSON", `slot`, "decode slot task payload"},
		{"JSON array", `[1,2]`, "decode slot task payload"},
		{"wrong field type", `{"schedule_id":"a","slot_ms":"1","generation":1,"timeout_ms":1}`, "decode slot task payload"},
		{"schedule_id missing", `{"slot_ms":1,"generation":1,"timeout_ms":1}`, "schedule_id, slot_ms and generation are required"},
		{"slot_ms missing", `{"schedule_id":"a","generation":1,"timeout_ms":1}`, "schedule_id, slot_ms and generation are required"},
		{"slot_ms negative", `{"schedule_id":"a","slot_ms":-5,"generation":1,"timeout_ms":1}`, "schedule_id, slot_ms and generation are required"},
		{"generation missing", `{"schedule_id":"a","slot_ms":1,"timeout_ms":1}`, "schedule_id, slot_ms and generation are required"},
		{"generation negative", `{"schedule_id":"a","slot_ms":1,"generation":-1,"timeout_ms":1}`, "schedule_id, slot_ms and generation are required"},
		{"count negative", `{"schedule_id":"a","slot_ms":1,"generation":1,"count":-1,"interval_ms":1,"timeout_ms":1}`, "positive count and interval"},
		{"range without interval", `{"schedule_id":"a","slot_ms":1,"generation":1,"count":2,"timeout_ms":1}`, "positive count and interval"},
		{"range negative interval", `{"schedule_id":"a","slot_ms":1,"generation":1,"count":2,"interval_ms":-1,"timeout_ms":1}`, "positive count and interval"},
		{"max_retry negative", `{"schedule_id":"a","slot_ms":1,"generation":1,"timeout_ms":1,"max_retry":-1}`, "max_retry must not be negative"},
		{"timeout_ms missing", `{"schedule_id":"a","slot_ms":1,"generation":1}`, "timeout_ms must be positive"},
		{"timeout_ms zero", `{"schedule_id":"a","slot_ms":1,"generation":1,"timeout_ms":0}`, "timeout_ms must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.payload))
			require.ErrorContains(t, err, tc.want)
		})
	}

	t.Run("count absent means one", func(t *testing.T) {
		got, err := Decode([]byte(`{"schedule_id":"a","slot_ms":1,"generation":1,"timeout_ms":1}`))
		require.NoError(t, err)
		require.Equal(t, 1, got.Count)
	})
}

func TestAsynqOptions(t *testing.T) {
	t.Run("max retry has a spare", func(t *testing.T) {
		s := testSlot(1)
		require.Equal(t, 3, s.AsynqMaxRetry())
	})

	t.Run("max retry zero has a spare", func(t *testing.T) {
		s := testSlot(1)
		s.MaxRetry = 0
		require.Equal(t, 1, s.AsynqMaxRetry())
	})

	t.Run("timeout of one slot", func(t *testing.T) {
		require.Equal(t, 45*time.Second+AsynqTimeoutGrace, testSlot(1).AsynqTimeout())
	})

	t.Run("timeout of a range", func(t *testing.T) {
		require.Equal(t, 4*45*time.Second+AsynqTimeoutGrace, testSlot(4).AsynqTimeout())
	})
}
