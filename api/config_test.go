package api

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/store"
)

func TestNewServiceRejectsConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"min interval below one second", Config{Limits: Limits{MinInterval: 500 * time.Millisecond}}, "minimum interval"},
		{"min interval not whole seconds", Config{Limits: Limits{MinInterval: 1500 * time.Millisecond}}, "whole number of seconds"},
		{"min interval above one year", Config{Limits: Limits{MinInterval: (MaxIntervalSeconds + 1) * time.Second}}, "at most one year"},
		{"negative payload limit", Config{Limits: Limits{MaxPayloadBytes: -1}}, "max payload bytes"},
		{"negative metadata entries", Config{Limits: Limits{MaxMetadataEntries: -1}}, "max metadata entries"},
		{"negative metadata key limit", Config{Limits: Limits{MaxMetadataKeyBytes: -1}}, "max metadata key bytes"},
		{"negative metadata value limit", Config{Limits: Limits{MaxMetadataValueBytes: -1}}, "max metadata value bytes"},
		{"request timeout too short", Config{RequestTimeout: time.Millisecond}, "request timeout"},
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewService(nil, NewRegistry(), tc.cfg, logger, metrics.NewUnregistered())
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestServiceConfiguredLimits(t *testing.T) {
	rdb := redistest.Start(t).Client()
	st, err := store.New(rdb, store.Config{Prefix: "limitstest", Partitions: 4})
	require.NoError(t, err)
	require.NoError(t, st.Init(testContext(t)))
	limits := Limits{MinInterval: time.Minute, MaxPayloadBytes: 8, MaxMetadataEntries: 1, MaxMetadataKeyBytes: 4, MaxMetadataValueBytes: 3}
	svc, err := NewService(st, newTestRegistry(t), Config{Limits: limits}, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.NewUnregistered())
	require.NoError(t, err)

	cases := []struct {
		name     string
		interval int32
		payload  []byte
		metadata map[string]string
		want     string
	}{
		{"interval below minimum", 59, nil, nil, "at least 60"},
		{"payload above limit", 60, make([]byte, 9), nil, "limit of 8 bytes"},
		{"metadata entries above limit", 60, nil, map[string]string{"a": "1", "b": "2"}, "limit of 1"},
		{"metadata key above limit", 60, nil, map[string]string{"abcde": "1"}, "limit of 4"},
		{"metadata value above limit", 60, nil, map[string]string{"a": "1234"}, "limit of 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := validCreateRequest()
			req.IntervalSeconds = tc.interval
			req.Payload = tc.payload
			req.Metadata = tc.metadata
			resp, err := svc.CreateSchedule(testContext(t), req)
			require.NoError(t, err)
			require.False(t, resp.GetSuccess())
			require.Equal(t, string(CodeInvalidArgument), resp.GetErrorCode())
			require.Contains(t, resp.GetError(), tc.want)
		})
	}

	t.Run("at every limit", func(t *testing.T) {
		req := validCreateRequest()
		req.IntervalSeconds = 60
		req.Payload = make([]byte, 8)
		req.Metadata = map[string]string{"abcd": "123"}
		createSchedule(t, svc, req)
	})
}
