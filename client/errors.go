package client

import "fmt"

// Code is the machine-readable class of a request that Pulse rejected: the
// error_code of a ScheduleService response.
type Code string

// The codes that Pulse returns in-band.
const (
	CodeNotFound           Code = "NOT_FOUND"
	CodeInvalidArgument    Code = "INVALID_ARGUMENT"
	CodeUnauthenticated    Code = "UNAUTHENTICATED"
	CodePermissionDenied   Code = "PERMISSION_DENIED"
	CodeFailedPrecondition Code = "FAILED_PRECONDITION"
	CodeResourceExhausted  Code = "RESOURCE_EXHAUSTED"
	CodeAlreadyExists      Code = "ALREADY_EXISTS"
)

// Error is a request that Pulse received and rejected. Retrying the same
// request gives the same error, except for ALREADY_EXISTS.
//
// Compare it with the sentinels by code:
//
//	if errors.Is(err, client.ErrNotFound) { ... }
//
// or read the code and message with errors.As. Failures to reach Pulse are
// gRPC status errors instead (status.Code(err) is UNAVAILABLE or
// DEADLINE_EXCEEDED), which are safe to retry.
type Error struct {
	// Code is the class of the error.
	Code Code
	// Message describes the problem, naming the value and the rule.
	Message string
}

// Error returns "CODE: message".
func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Is reports whether target is an *Error with the same code and no message,
// such as ErrNotFound.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Code == e.Code
}

// Sentinels to compare errors with errors.Is.
var (
	ErrNotFound           = &Error{Code: CodeNotFound}
	ErrInvalidArgument    = &Error{Code: CodeInvalidArgument}
	ErrUnauthenticated    = &Error{Code: CodeUnauthenticated}
	ErrPermissionDenied   = &Error{Code: CodePermissionDenied}
	ErrFailedPrecondition = &Error{Code: CodeFailedPrecondition}
	ErrResourceExhausted  = &Error{Code: CodeResourceExhausted}
	ErrAlreadyExists      = &Error{Code: CodeAlreadyExists}
)

// inBand is the part that every ScheduleService response shares.
type inBand interface {
	GetSuccess() bool
	GetError() string
	GetErrorCode() string
}

// check turns the result of a call into an error: the gRPC error as is, or
// an *Error for an in-band rejection.
func check(resp inBand, err error) error {
	if err != nil {
		return err
	}
	if resp.GetSuccess() {
		return nil
	}
	code := Code(resp.GetErrorCode())
	if code == "" {
		code = "UNKNOWN"
	}
	return &Error{Code: code, Message: resp.GetError()}
}
