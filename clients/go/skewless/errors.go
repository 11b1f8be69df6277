package skewless

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FieldViolation names one bad field of a request (google.rpc.BadRequest).
type FieldViolation struct {
	// Field is the request field path, e.g. "entities.driver_id".
	Field string
	// Description says what is wrong with it.
	Description string
}

// Error is a failed call: the gRPC status and its google.rpc details, parsed.
// Use errors.As(err, &e) with e *skewless.Error, or status.FromError(err).
type Error struct {
	// Code is the canonical gRPC status code (NOT_FOUND, INVALID_ARGUMENT, ...).
	Code codes.Code
	// Message is the server's actionable message.
	Message string
	// Reason is ErrorInfo.reason: a stable UPPER_SNAKE identifier of the error kind.
	Reason string
	// Domain is ErrorInfo.domain ("skewless.dev" for errors raised by skewless).
	Domain string
	// Metadata holds the dynamic values the message mentions (ErrorInfo.metadata).
	Metadata map[string]string
	// FieldViolations lists the bad request fields (BadRequest), if any.
	FieldViolations []FieldViolation
	// RetryDelay is RetryInfo.retry_delay (UNAVAILABLE), 0 if absent.
	RetryDelay time.Duration
	status     *status.Status
}

// Error implements error.
func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("skewless: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("skewless: %s: %s", e.Code, e.Message)
}

// GRPCStatus returns the status as received, so that status.FromError and
// status.Code work on an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Retryable reports whether the call may succeed when retried (UNAVAILABLE, or a
// RetryInfo detail).
func (e *Error) Retryable() bool { return e.Code == codes.Unavailable || e.RetryDelay > 0 }

// FromError converts an error returned by a generated stub into an *Error (nil stays nil;
// context errors and non-gRPC errors are returned as they are).
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch detail := d.(type) {
		case *errdetails.ErrorInfo:
			e.Reason = detail.GetReason()
			e.Domain = detail.GetDomain()
			e.Metadata = detail.GetMetadata()
		case *errdetails.BadRequest:
			for _, v := range detail.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			e.RetryDelay = detail.GetRetryDelay().AsDuration()
		}
	}
	return e
}
