package api

import (
	"time"

	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// Limits of the per-schedule options of CreateSchedule.
const (
	// MaxTimeoutSeconds bounds timeout_seconds: one day.
	MaxTimeoutSeconds = 24 * 60 * 60
	// MaxRetries bounds max_retries.
	MaxRetries = 25
	// MaxPauseAfterFailures bounds pause_after_failures.
	MaxPauseAfterFailures = 1000
	// MaxStartAtAhead bounds how far in the future start_at may lie.
	MaxStartAtAhead = 365 * 24 * time.Hour
	// startAtPastTolerance accepts a start_at slightly in the past, as the
	// caller's clock may be a little ahead of Redis's.
	startAtPastTolerance = 5 * time.Second
)

// Defaults of the per-schedule options.
const (
	TimeoutDefault  = 30 * time.Second
	MaxRetryDefault = 3
)

// scheduleOptions validates the per-schedule options of a request and fills
// in the defaults. now is the API's clock, used for start_at.
func (s *Service) scheduleOptions(req *protocolpb.CreateScheduleRequest, now time.Time) (store.Options, time.Time, *requestError) {
	o := store.Options{
		Timeout:            s.cfg.DefaultTimeout,
		MaxRetry:           s.cfg.DefaultMaxRetry,
		Misfire:            store.MisfirePolicy(req.GetMisfirePolicy()),
		Overlap:            store.OverlapPolicy(req.GetOverlapPolicy()),
		PauseAfterFailures: int(req.GetPauseAfterFailures()),
	}

	switch o.Misfire {
	case "", store.MisfireRunLatest, store.MisfireSkip, store.MisfireRunAll:
	default:
		return o, time.Time{}, newRequestError(CodeInvalidArgument,
			"misfire_policy %q is invalid: it must be run_latest, skip or run_all", truncate(req.GetMisfirePolicy(), 64))
	}
	if w := req.GetMisfireWindowSeconds(); w != 0 {
		if o.Misfire != store.MisfireRunAll {
			return o, time.Time{}, newRequestError(CodeInvalidArgument,
				"misfire_window_seconds %d is invalid: it applies only to misfire_policy run_all", w)
		}
		if w < 1 || time.Duration(w)*time.Second > store.MisfireWindowMax {
			return o, time.Time{}, newRequestError(CodeInvalidArgument,
				"misfire_window_seconds %d is invalid: it must be between 1 and %d (one day)", w, int(store.MisfireWindowMax/time.Second))
		}
		o.MisfireWindow = time.Duration(w) * time.Second
	}

	switch o.Overlap {
	case "", store.OverlapSkip, store.OverlapAllow, store.OverlapBufferOne:
	default:
		return o, time.Time{}, newRequestError(CodeInvalidArgument,
			"overlap_policy %q is invalid: it must be skip, allow or buffer_one", truncate(req.GetOverlapPolicy(), 64))
	}

	if t := req.GetTimeoutSeconds(); t != 0 {
		if t < 1 || t > MaxTimeoutSeconds {
			return o, time.Time{}, newRequestError(CodeInvalidArgument,
				"timeout_seconds %d is invalid: it must be between 1 and %d (one day)", t, MaxTimeoutSeconds)
		}
		o.Timeout = time.Duration(t) * time.Second
	}
	if req.MaxRetries != nil {
		r := req.GetMaxRetries()
		if r < 0 || r > MaxRetries {
			return o, time.Time{}, newRequestError(CodeInvalidArgument,
				"max_retries %d is invalid: it must be between 0 and %d", r, MaxRetries)
		}
		o.MaxRetry = int(r)
	}
	if p := req.GetPauseAfterFailures(); p < 0 || p > MaxPauseAfterFailures {
		return o, time.Time{}, newRequestError(CodeInvalidArgument,
			"pause_after_failures %d is invalid: it must be between 0 (never) and %d", p, MaxPauseAfterFailures)
	}

	startAt, reqErr := parseStartAt(req, now)
	return o, startAt, reqErr
}

// parseStartAt validates start_at, which must be RFC 3339, not in the past
// and at most one year ahead.
func parseStartAt(req *protocolpb.CreateScheduleRequest, now time.Time) (time.Time, *requestError) {
	raw := req.GetStartAt()
	if raw == "" {
		return time.Time{}, nil
	}
	if req.GetRunImmediately() {
		return time.Time{}, newRequestError(CodeInvalidArgument,
			"start_at and run_immediately are both set: start_at is the first slot, so set only one")
	}
	t, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		return time.Time{}, newRequestError(CodeInvalidArgument,
			"start_at %q is invalid: it must be an RFC 3339 time such as 2026-01-02T15:04:05Z", truncate(raw, 64))
	}
	if t.Before(now.Add(-startAtPastTolerance)) {
		return time.Time{}, newRequestError(CodeInvalidArgument,
			"start_at %q is invalid: it is in the past", raw)
	}
	if t.After(now.Add(MaxStartAtAhead)) {
		return time.Time{}, newRequestError(CodeInvalidArgument,
			"start_at %q is invalid: it must be at most one year ahead", raw)
	}
	return t.UTC(), nil
}
