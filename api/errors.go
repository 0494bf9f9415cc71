package api

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pulse-sched/pulse/store"
)

// ErrorCode is the machine-readable class of an in-band error, sent in the
// error_code field of every response.
type ErrorCode string

// The error codes of ScheduleService responses.
const (
	CodeNotFound           ErrorCode = "NOT_FOUND"
	CodeInvalidArgument    ErrorCode = "INVALID_ARGUMENT"
	CodeUnauthenticated    ErrorCode = "UNAUTHENTICATED"
	CodePermissionDenied   ErrorCode = "PERMISSION_DENIED"
	CodeFailedPrecondition ErrorCode = "FAILED_PRECONDITION"
	CodeResourceExhausted  ErrorCode = "RESOURCE_EXHAUSTED"
	CodeAlreadyExists      ErrorCode = "ALREADY_EXISTS"
)

// requestError is an error about the request, returned in-band.
type requestError struct {
	code    ErrorCode
	message string
}

func (e *requestError) Error() string { return e.message }

func newRequestError(code ErrorCode, format string, args ...any) *requestError {
	return &requestError{code: code, message: fmt.Sprintf(format, args...)}
}

// infrastructureStatus converts a failure of Redis or of the call itself into
// a gRPC status, so that clients retry it with their standard policies. A
// record that cannot be decoded is DATA_LOSS, which no retry fixes.
func infrastructureStatus(op string, err error) error {
	switch {
	case errors.Is(err, store.ErrCorrupt):
		return status.Errorf(codes.DataLoss, "%s: %v", op, err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: deadline exceeded before Redis answered", op)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: call canceled", op)
	default:
		return status.Errorf(codes.Unavailable, "%s: schedule store unavailable: %v", op, err)
	}
}
