package api

import (
	"time"

	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// TimeFormat is the layout of every timestamp in the API: RFC 3339 in UTC
// with milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// formatTime formats t with TimeFormat; the zero time is "".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(TimeFormat)
}

// scheduledJob maps a stored schedule to the API message.
func scheduledJob(s *store.Schedule) *protocolpb.ScheduledJob {
	return &protocolpb.ScheduledJob{
		Id:              s.ID,
		AtsCode:         s.ATSCode,
		HandlerName:     s.HandlerName,
		Payload:         s.Payload,
		SourceUrl:       s.SourceURL,
		IntervalSeconds: int32(s.Interval / time.Second),
		NextRunAt:       formatTime(s.NextRunAt),
		LastRunAt:       formatTime(s.LastRunAt),
		LastExecutionId: s.LastExecutionID,
		State:           string(s.State),
		Metadata:        s.MetadataJSON,
		CreatedAt:       formatTime(s.CreatedAt),
		UpdatedAt:       formatTime(s.UpdatedAt),

		MisfirePolicy:        string(s.Misfire),
		MisfireWindowSeconds: int32(s.MisfireWindow / time.Second),
		OverlapPolicy:        string(s.Overlap),
		TimeoutSeconds:       int32(s.Timeout / time.Second),
		MaxRetries:           int32(s.MaxRetry),
		PauseAfterFailures:   int32(s.PauseAfterFailures),
		LastStatus:           string(s.LastStatus),
		LastError:            s.LastError,
		ConsecutiveFailures:  s.ConsecutiveFailures,
		TotalRuns:            s.TotalRuns,
		PausedReason:         s.PausedReason,
		SkippedSlots:         s.SkippedSlots,
	}
}
