package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestSpecRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		spec spec
	}{
		{"all fields", spec{
			HandlerName:  "reports.daily",
			SourceURL:    "grpc://alpha.plugins.internal:9000",
			MetadataJSON: `{"a":"1","b":"2"}`,
			Payload:      []byte("hello"),
		}},
		{"binary payload", spec{
			HandlerName: "h",
			Payload:     []byte{0x00, 0x01, 0xff, 0xfe, '\n', 0x00},
		}},
		{"empty fields", spec{}},
		{"empty strings with payload", spec{Payload: []byte{0x00}}},
		{"fields longer than one varint byte", spec{
			HandlerName:  strings.Repeat("h", 128),
			SourceURL:    strings.Repeat("s", 300),
			MetadataJSON: `{"k":"` + strings.Repeat("v", 20000) + `"}`,
			Payload:      []byte(strings.Repeat("p", 1<<16)),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeSpec(encodeSpec(tc.spec))
			require.NoError(t, err)
			if diff := cmp.Diff(tc.spec, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("decoded spec differs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSpecDecodeCopiesPayload(t *testing.T) {
	blob := encodeSpec(spec{HandlerName: "h", Payload: []byte("abc")})
	got, err := decodeSpec(blob)
	require.NoError(t, err)

	blob[len(blob)-1] = 'X'
	require.Equal(t, []byte("abc"), got.Payload)
}

func TestSpecDecodeMalformed(t *testing.T) {
	valid := encodeSpec(spec{HandlerName: "reports.daily", SourceURL: "grpc://alpha:9000", MetadataJSON: "{}"})
	cases := []struct {
		name string
		blob []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"unknown version", append([]byte{specVersion + 1}, valid[1:]...)},
		{"version only", []byte{specVersion}},
		{"handler name cut short", valid[:5]},
		{"source url cut short", valid[:1+1+len("reports.daily")+3]},
		{"metadata length missing", valid[:1+1+len("reports.daily")+1+len("grpc://alpha:9000")]},
		{"length beyond end", []byte{specVersion, 0x7f, 'a'}},
		{"varint overflow", []byte{specVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"garbage", []byte("not a spec at all")},
		{"trailing byte", append(append([]byte(nil), valid...), 0x00)},
		{"trailing field", append(append([]byte(nil), valid...), 0x01, 'x')},
		{"payload cut short", encodeSpec(spec{HandlerName: "h", Payload: []byte("abc")})[:6]},
		{"payload length missing", valid[:len(valid)-1]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeSpec(tc.blob)
			require.Error(t, err)
			require.True(t, errors.Is(err, errBadSpec), "error %v is not errBadSpec", err)
			require.True(t, errors.Is(err, ErrCorrupt), "error %v is not ErrCorrupt", err)
		})
	}
}

func TestCorruptSpec(t *testing.T) {
	t.Parallel()
	rdb := startRedis(t)
	st := newTestStore(t, rdb, Config{Partitions: 4})

	corrupt := func(t *testing.T, blob []byte) *Schedule {
		t.Helper()
		s := createSchedule(t, st, newSchedule())
		p := st.keys.PartitionOf(s.ID)
		require.NoError(t, rdb.Set(testContext(t), st.keys.SpecKey(p, s.ID), blob, 0).Err())
		return s
	}
	trailing := append(encodeSpec(spec{HandlerName: "h"}), 0x00)

	t.Run("get wraps ErrCorrupt", func(t *testing.T) {
		s := corrupt(t, trailing)

		_, err := st.GetSchedule(testContext(t), s.ID, "")

		require.ErrorIs(t, err, ErrCorrupt)
	})

	t.Run("start wraps ErrCorrupt", func(t *testing.T) {
		s := corrupt(t, trailing)

		_, _, err := st.StartExecution(testContext(t), StartRequest{Slot: slotOf(s, 1), RunningLease: time.Minute})

		require.ErrorIs(t, err, ErrCorrupt)
	})
}

func TestExecutionID(t *testing.T) {
	slot := time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC)
	ref := SlotRef{ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", Slot: slot, Generation: 1}

	t.Run("deterministic", func(t *testing.T) {
		require.Equal(t, ref.ExecutionID(), ref.ExecutionID())
	})

	t.Run("independent of generation", func(t *testing.T) {
		other := ref
		other.Generation = 7
		require.Equal(t, ref.ExecutionID(), other.ExecutionID())
	})

	t.Run("valid ULID with slot time", func(t *testing.T) {
		id, err := ulid.ParseStrict(ref.ExecutionID())
		require.NoError(t, err)
		require.Equal(t, uint64(slot.UnixMilli()), id.Time())
		require.True(t, ulid.Time(id.Time()).Equal(slot), "ULID time %s, slot %s", ulid.Time(id.Time()), slot)
	})

	t.Run("distinct per schedule", func(t *testing.T) {
		other := ref
		other.ScheduleID = "01JDQ5V9M3K2X8Y7Z6W5T4R3Q3"
		require.NotEqual(t, ref.ExecutionID(), other.ExecutionID())
	})

	t.Run("distinct per slot", func(t *testing.T) {
		seen := map[string]time.Time{}
		for k := 0; k < 1000; k++ {
			r := ref
			r.Slot = slot.Add(time.Duration(k) * time.Millisecond)
			id := r.ExecutionID()
			prev, dup := seen[id]
			require.False(t, dup, "slots %s and %s share execution ID %s", prev, r.Slot, id)
			seen[id] = r.Slot
		}
	})

	t.Run("sorts by slot", func(t *testing.T) {
		later := ref
		later.Slot = slot.Add(time.Millisecond)
		require.Less(t, ref.ExecutionID(), later.ExecutionID())
	})
}
