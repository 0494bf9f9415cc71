// Package api implements the gRPC ScheduleService: it authenticates each call
// by token, validates the request, maps it to the store and returns in-band
// errors with a machine-readable code.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// Config sets up a Service. The zero value of each field means its default.
type Config struct {
	// Limits bounds what requests may contain.
	Limits Limits
	// RequestTimeout bounds the Redis work of one call when the caller's
	// deadline is later or absent. Default 5s.
	RequestTimeout time.Duration
	// DefaultTimeout is the timeout of a schedule whose request sets none.
	// Default 30s.
	DefaultTimeout time.Duration
	// DefaultMaxRetry is the retry count of a schedule whose request sets
	// none. Zero means the default 3; a negative value means no retry.
	DefaultMaxRetry int
	// Now returns the current time, for start_at; default time.Now. Every
	// due decision uses the Redis clock instead.
	Now func() time.Time
	// LocalHandlers names the handlers registered in the workers with
	// worker.Handle besides the built-ins. Plugins without an endpoint may
	// schedule them.
	LocalHandlers []string
}

// RequestTimeoutDefault is the default of Config.RequestTimeout.
const RequestTimeoutDefault = 5 * time.Second

// Service implements protocolpb.ScheduleServiceServer.
type Service struct {
	protocolpb.UnimplementedScheduleServiceServer

	store    *store.Store
	registry *Registry
	cfg      Config
	logger   *slog.Logger
	metrics  *metrics.Metrics
}

// NewService returns the ScheduleService on st, authenticating calls with
// registry.
func NewService(st *store.Store, registry *Registry, cfg Config, logger *slog.Logger, m *metrics.Metrics) (*Service, error) {
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = RequestTimeoutDefault
	}
	if cfg.DefaultTimeout == 0 {
		cfg.DefaultTimeout = TimeoutDefault
	}
	switch {
	case cfg.DefaultMaxRetry == 0:
		cfg.DefaultMaxRetry = MaxRetryDefault
	case cfg.DefaultMaxRetry < 0:
		cfg.DefaultMaxRetry = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultTimeout < time.Second || cfg.DefaultTimeout > MaxTimeoutSeconds*time.Second {
		return nil, fmt.Errorf("api config: default timeout %s is out of range: it must be between 1s and 24h", cfg.DefaultTimeout)
	}
	if cfg.DefaultMaxRetry > MaxRetries {
		return nil, fmt.Errorf("api config: default max retry %d is too high: it must be at most %d", cfg.DefaultMaxRetry, MaxRetries)
	}
	if err := cfg.Limits.validate(); err != nil {
		return nil, fmt.Errorf("api config: %w", err)
	}
	if cfg.RequestTimeout < 10*time.Millisecond {
		return nil, fmt.Errorf("api config: request timeout %s is too short: it must be at least 10ms", cfg.RequestTimeout)
	}
	return &Service{
		store:    st,
		registry: registry,
		cfg:      cfg,
		logger:   logger.With("component", "api"),
		metrics:  m,
	}, nil
}

// CreateSchedule creates a new recurring schedule.
func (s *Service) CreateSchedule(ctx context.Context, req *protocolpb.CreateScheduleRequest) (*protocolpb.CreateScheduleResponse, error) {
	id, err := s.create(ctx, req)
	if reqErr, ok := s.finish("CreateSchedule", err); ok {
		return &protocolpb.CreateScheduleResponse{Error: reqErr.message, ErrorCode: string(reqErr.code)}, nil
	} else if err != nil {
		return nil, err
	}
	return &protocolpb.CreateScheduleResponse{Success: true, ScheduleId: id}, nil
}

// PauseSchedule pauses a schedule; pausing a paused schedule succeeds.
func (s *Service) PauseSchedule(ctx context.Context, req *protocolpb.PauseScheduleRequest) (*protocolpb.PauseScheduleResponse, error) {
	err := s.changeState(ctx, "pause", req.GetAuthToken(), req.GetScheduleId(), s.store.PauseSchedule)
	if reqErr, ok := s.finish("PauseSchedule", err); ok {
		return &protocolpb.PauseScheduleResponse{Error: reqErr.message, ErrorCode: string(reqErr.code)}, nil
	} else if err != nil {
		return nil, err
	}
	return &protocolpb.PauseScheduleResponse{Success: true}, nil
}

// ResumeSchedule resumes a paused schedule; resuming an active schedule
// succeeds.
func (s *Service) ResumeSchedule(ctx context.Context, req *protocolpb.ResumeScheduleRequest) (*protocolpb.ResumeScheduleResponse, error) {
	err := s.changeState(ctx, "resume", req.GetAuthToken(), req.GetScheduleId(), s.store.ResumeSchedule)
	if reqErr, ok := s.finish("ResumeSchedule", err); ok {
		return &protocolpb.ResumeScheduleResponse{Error: reqErr.message, ErrorCode: string(reqErr.code)}, nil
	} else if err != nil {
		return nil, err
	}
	return &protocolpb.ResumeScheduleResponse{Success: true}, nil
}

// DeleteSchedule soft-deletes a schedule; deleting a deleted schedule
// succeeds.
func (s *Service) DeleteSchedule(ctx context.Context, req *protocolpb.DeleteScheduleRequest) (*protocolpb.DeleteScheduleResponse, error) {
	err := s.changeState(ctx, "delete", req.GetAuthToken(), req.GetScheduleId(), s.store.DeleteSchedule)
	if reqErr, ok := s.finish("DeleteSchedule", err); ok {
		return &protocolpb.DeleteScheduleResponse{Error: reqErr.message, ErrorCode: string(reqErr.code)}, nil
	} else if err != nil {
		return nil, err
	}
	return &protocolpb.DeleteScheduleResponse{Success: true}, nil
}

// GetSchedule returns a schedule, including a deleted one until its
// retention ends.
func (s *Service) GetSchedule(ctx context.Context, req *protocolpb.GetScheduleRequest) (*protocolpb.GetScheduleResponse, error) {
	job, err := s.get(ctx, req)
	if reqErr, ok := s.finish("GetSchedule", err); ok {
		return &protocolpb.GetScheduleResponse{Error: reqErr.message, ErrorCode: string(reqErr.code)}, nil
	} else if err != nil {
		return nil, err
	}
	return &protocolpb.GetScheduleResponse{Success: true, Job: job}, nil
}

// finish counts the call by its result and splits err into an in-band
// request error (ok is true) or an infrastructure error, which the caller
// returns as a gRPC status.
func (s *Service) finish(method string, err error) (*requestError, bool) {
	var reqErr *requestError
	switch {
	case err == nil:
		s.metrics.Requests.WithLabelValues(method, metrics.CodeOK).Inc()
		return nil, false
	case errors.As(err, &reqErr):
		s.metrics.Requests.WithLabelValues(method, string(reqErr.code)).Inc()
		return reqErr, true
	default:
		s.metrics.Requests.WithLabelValues(method, metrics.CodeUnavailable).Inc()
		return nil, false
	}
}

// authenticate returns the caller of token.
func (s *Service) authenticate(token string) (Principal, error) {
	if token == "" {
		return Principal{}, newRequestError(CodeUnauthenticated, "auth_token is missing")
	}
	principal, ok := s.registry.Authenticate(token)
	if !ok {
		return Principal{}, newRequestError(CodeUnauthenticated, "auth_token is not valid: no plugin or admin of the registry has this token")
	}
	return principal, nil
}

// ownerFilter returns the ats_code that limits what the principal may see,
// or "" for an admin.
func ownerFilter(p Principal) string {
	if p.IsAdmin() {
		return ""
	}
	return p.Plugin.ATSCode
}

func (s *Service) create(ctx context.Context, req *protocolpb.CreateScheduleRequest) (string, error) {
	principal, err := s.authenticate(req.GetAuthToken())
	if err != nil {
		return "", err
	}
	plugin, err := s.resolvePlugin(principal, req.GetAtsCode())
	if err != nil {
		return "", err
	}

	limits := s.cfg.Limits
	if reqErr := validateHandlerName(req.GetHandlerName()); reqErr != nil {
		return "", reqErr
	}
	if reqErr := s.checkHandler(plugin, req.GetHandlerName()); reqErr != nil {
		return "", reqErr
	}
	if reqErr := limits.validateInterval(req.GetIntervalSeconds()); reqErr != nil {
		return "", reqErr
	}
	if reqErr := limits.validatePayload(req.GetPayload()); reqErr != nil {
		return "", reqErr
	}
	metadataJSON, reqErr := limits.validateMetadata(req.GetMetadata())
	if reqErr != nil {
		return "", reqErr
	}
	options, startAt, reqErr := s.scheduleOptions(req, s.cfg.Now())
	if reqErr != nil {
		return "", reqErr
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	sched, err := s.store.CreateSchedule(ctx, store.NewSchedule{
		ID:             ulid.MustNew(ulid.Timestamp(s.cfg.Now()), ulid.DefaultEntropy()).String(),
		StartAt:        startAt,
		Options:        options,
		ATSCode:        plugin.ATSCode,
		HandlerName:    req.GetHandlerName(),
		SourceURL:      plugin.Endpoint,
		Interval:       time.Duration(req.GetIntervalSeconds()) * time.Second,
		Payload:        req.GetPayload(),
		MetadataJSON:   metadataJSON,
		RunImmediately: req.GetRunImmediately(),
	})
	if errors.Is(err, store.ErrAlreadyExists) {
		return "", newRequestError(CodeAlreadyExists, "a schedule with the new ID already exists; retry the call")
	}
	if err != nil {
		s.logRedisError("create schedule", err)
		return "", infrastructureStatus("create schedule", err)
	}

	s.logger.Info("schedule created",
		"schedule_id", sched.ID, "ats_code", sched.ATSCode, "handler", sched.HandlerName,
		"interval_seconds", req.GetIntervalSeconds(), "next_run_at", formatTime(sched.NextRunAt))
	return sched.ID, nil
}

// resolvePlugin returns the plugin that a new schedule belongs to.
func (s *Service) resolvePlugin(principal Principal, atsCode string) (*Plugin, error) {
	if principal.IsAdmin() {
		if atsCode == "" {
			return nil, newRequestError(CodeInvalidArgument, "ats_code is missing: an admin token must name the plugin that owns the new schedule")
		}
		plugin, ok := s.registry.Plugin(atsCode)
		if !ok {
			return nil, newRequestError(CodeInvalidArgument, "ats_code %q is not a plugin of the registry", truncate(atsCode, 64))
		}
		return plugin, nil
	}
	if atsCode != "" && atsCode != principal.Plugin.ATSCode {
		return nil, newRequestError(CodePermissionDenied,
			"ats_code %q does not match the plugin of auth_token: a plugin may create schedules only for itself", truncate(atsCode, 64))
	}
	return principal.Plugin, nil
}

// changeState runs one state change (pause, resume or delete).
func (s *Service) changeState(ctx context.Context, verb, token, rawID string,
	apply func(ctx context.Context, id, owner string) (bool, error)) error {
	principal, err := s.authenticate(token)
	if err != nil {
		return err
	}
	id, reqErr := normalizeScheduleID(rawID)
	if reqErr != nil {
		return reqErr
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	changed, err := apply(ctx, id, ownerFilter(principal))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return newRequestError(CodeNotFound, "schedule %s not found", id)
	case errors.Is(err, store.ErrDeleted):
		return newRequestError(CodeFailedPrecondition, "schedule %s is deleted: a deleted schedule cannot be paused or resumed", id)
	case err != nil:
		s.logRedisError(verb+" schedule", err)
		return infrastructureStatus(verb+" schedule", err)
	}

	if changed {
		s.logger.Info("schedule "+pastTense(verb), "schedule_id", id)
	}
	return nil
}

func (s *Service) get(ctx context.Context, req *protocolpb.GetScheduleRequest) (*protocolpb.ScheduledJob, error) {
	principal, err := s.authenticate(req.GetAuthToken())
	if err != nil {
		return nil, err
	}
	id, reqErr := normalizeScheduleID(req.GetScheduleId())
	if reqErr != nil {
		return nil, reqErr
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	sched, err := s.store.GetSchedule(ctx, id, ownerFilter(principal))
	if errors.Is(err, store.ErrNotFound) {
		return nil, newRequestError(CodeNotFound, "schedule %s not found", id)
	}
	if err != nil {
		s.logRedisError("get schedule", err)
		return nil, infrastructureStatus("get schedule", err)
	}
	return scheduledJob(sched), nil
}

func (s *Service) logRedisError(op string, err error) {
	s.metrics.RedisErrors.WithLabelValues("api").Inc()
	s.logger.Warn("redis operation failed", "op", op, "error", err)
}

func pastTense(verb string) string {
	switch verb {
	case "pause":
		return "paused"
	case "resume":
		return "resumed"
	case "delete":
		return "deleted"
	default:
		return fmt.Sprintf("%s done", verb)
	}
}
