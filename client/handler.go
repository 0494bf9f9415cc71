package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// Request is one attempt of one execution that Pulse sends a plugin to run.
type Request struct {
	// ExecutionID is the same for every attempt of a slot: use it to make
	// the handler's work idempotent.
	ExecutionID string
	ScheduleID  string
	HandlerName string
	// ATSCode is the plugin that owns the schedule.
	ATSCode string
	// Slot is the grid time the execution is for, in UTC.
	Slot time.Time
	// Attempt is 0 for the first attempt and grows with each retry.
	Attempt  int
	Payload  []byte
	Metadata map[string]string
}

// HandlerFunc runs one attempt. It should return when ctx ends: at the
// schedule's timeout Pulse stops waiting and counts a failed attempt. A
// returned error is retried with backoff unless it is wrapped with
// Permanent.
type HandlerFunc func(ctx context.Context, req *Request) error

// ErrPermanent marks an error that a retry cannot fix; see Permanent.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err so that Pulse fails the execution at once, without
// retries. errors.Is(Permanent(err), ErrPermanent) is true.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// HandlerServer serves the PluginHandler API from a fixed set of handlers.
// Register it on a gRPC server with protocolpb.RegisterPluginHandlerServer,
// or let ServeHandlers do so.
type HandlerServer struct {
	protocolpb.UnimplementedPluginHandlerServer

	handlers map[string]HandlerFunc
	logger   *slog.Logger
}

// HandlerOption changes a HandlerServer.
type HandlerOption func(*HandlerServer)

// WithLogger logs each failed or panicking execution to logger; the default
// logs nothing. Payloads and metadata are never logged.
func WithLogger(logger *slog.Logger) HandlerOption {
	return func(s *HandlerServer) { s.logger = logger }
}

// NewHandlerServer returns a server of the given handlers, keyed by handler
// name. The map is copied.
func NewHandlerServer(handlers map[string]HandlerFunc, opts ...HandlerOption) *HandlerServer {
	s := &HandlerServer{handlers: make(map[string]HandlerFunc, len(handlers)), logger: slog.New(slog.DiscardHandler)}
	for name, fn := range handlers {
		s.handlers[name] = fn
	}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// Execute runs the requested handler. An unknown handler name or a slot
// that is not RFC 3339 is a permanent failure; a panic is a failure that
// Pulse retries.
func (s *HandlerServer) Execute(ctx context.Context, in *protocolpb.ExecuteRequest) (*protocolpb.ExecuteResponse, error) {
	fn, ok := s.handlers[in.GetHandlerName()]
	if !ok {
		return failure(Permanent(fmt.Errorf("no handler named %q in this plugin; it serves %s",
			in.GetHandlerName(), strings.Join(s.names(), ", ")))), nil
	}
	slot, err := time.Parse(time.RFC3339Nano, in.GetSlot())
	if err != nil {
		return failure(Permanent(fmt.Errorf("slot %q is not an RFC 3339 time", in.GetSlot()))), nil
	}
	req := &Request{
		ExecutionID: in.GetExecutionId(),
		ScheduleID:  in.GetScheduleId(),
		HandlerName: in.GetHandlerName(),
		ATSCode:     in.GetAtsCode(),
		Slot:        slot.UTC(),
		Attempt:     int(in.GetAttempt()),
		Payload:     in.GetPayload(),
		Metadata:    in.GetMetadata(),
	}
	if req.Metadata == nil {
		req.Metadata = map[string]string{}
	}

	if err := s.call(ctx, fn, req); err != nil {
		s.logger.WarnContext(ctx, "handler failed", "handler", req.HandlerName, "schedule_id", req.ScheduleID,
			"execution_id", req.ExecutionID, "attempt", req.Attempt, "permanent", errors.Is(err, ErrPermanent), "error", err)
		return failure(err), nil
	}
	return &protocolpb.ExecuteResponse{Success: true}, nil
}

// call runs fn, turning a panic into an error.
func (s *HandlerServer) call(ctx context.Context, fn HandlerFunc, req *Request) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler %q panicked: %v", req.HandlerName, r)
		}
	}()
	return fn(ctx, req)
}

func (s *HandlerServer) names() []string {
	names := make([]string, 0, len(s.handlers))
	for name := range s.handlers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func failure(err error) *protocolpb.ExecuteResponse {
	msg := err.Error()
	if msg == "" {
		msg = "handler failed without an error message"
	}
	return &protocolpb.ExecuteResponse{Error: msg, Permanent: errors.Is(err, ErrPermanent)}
}

// ServeHandlers serves the PluginHandler API of handlers on lis until ctx
// ends, then stops gracefully: it waits up to 10 seconds for running
// handlers, then cancels them. It returns nil after a stop by ctx, else the
// error that ended serving.
func ServeHandlers(ctx context.Context, lis net.Listener, handlers map[string]HandlerFunc, opts ...grpc.ServerOption) error {
	srv := grpc.NewServer(opts...)
	protocolpb.RegisterPluginHandlerServer(srv, NewHandlerServer(handlers))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}

	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
	return nil
}
