package ctxlockotel

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// ErrorTypeOther is the error.type value used when nothing better is known,
// as the semantic conventions prescribe.
const ErrorTypeOther = "_OTHER"

// sentinelPrefix is the text every ctxlock sentinel error starts with.
const sentinelPrefix = "ctxlock: "

// errorTypeUnavailable is the error type of ctxlock.ErrUnavailable.
const errorTypeUnavailable = "ctxlock.backend_unavailable"

// ErrorType returns the value of the error.type attribute for err, a short,
// low-cardinality name of what went wrong. It is, in this order:
//
//  1. "" for a nil err;
//  2. the result of the ErrorType() string method of the first error in err's
//     tree that has one (the convention of go.opentelemetry.io/otel/semconv);
//  3. "context.DeadlineExceeded" or "context.Canceled" when err matches them,
//     except that a deadline that also matches ctxlock.ErrUnavailable (not
//     as the cause a context was cancelled with) gives
//     "ctxlock.backend_unavailable": that is a backend call that ran out of
//     time (an attempt's WithAcquireTimeout, a refresh or release batch's
//     bound), which a dashboard should count as the backend's fault, not
//     as the caller's deadline;
//  4. for a ctxlock sentinel error in err's tree (the errors.New values of
//     package ctxlock, whose text starts with "ctxlock: "), "ctxlock." and its
//     text with spaces as underscores: ErrLost ("ctxlock: lock lost") gives
//     "ctxlock.lock_lost", ErrUnavailable gives "ctxlock.backend_unavailable",
//     ErrClosed gives "ctxlock.manager_closed";
//  5. the package-qualified Go type of the first error in the tree that is not
//     a generic wrapper (fmt.Errorf, errors.Join, errors.New), for example
//     "net.OpError" or "github.com/redis/go-redis/v9/internal/proto.RedisError";
//  6. ErrorTypeOther.
func ErrorType(err error) string {
	return errorType(err, false)
}

// errorType implements ErrorType; with skipContext it ignores context errors
// (used to name the fault joined to a cancellation).
func errorType(err error, skipContext bool) string {
	if err == nil {
		return ""
	}
	if skipContext {
		// The fault joined to a cancellation, not the cause the caller
		// cancelled its context with (see withCause).
		if s := findErrorTyper(err, 0); s != "" {
			return s
		}
	} else {
		var et interface{ ErrorType() string }
		if errors.As(err, &et) {
			if s := et.ErrorType(); s != "" {
				return s
			}
		}
	}
	if !skipContext {
		if errors.Is(err, context.DeadlineExceeded) {
			if s := findSentinel(err, true, 0); s == errorTypeUnavailable {
				return s
			}
			return "context.DeadlineExceeded"
		}
		if errors.Is(err, context.Canceled) {
			return "context.Canceled"
		}
	}
	if s := findSentinel(err, skipContext, 0); s != "" {
		return s
	}
	if s := findTyped(err, skipContext, 0); s != "" {
		return s
	}
	return ErrorTypeOther
}

const maxDepth = 32 // bound on error-tree walks (guards against cycles)

var (
	errorStringType = reflect.TypeOf(errors.New(""))
	fmtWrapType     = reflect.TypeOf(fmt.Errorf("%w", errors.New("x")))
	fmtWrapsType    = reflect.TypeOf(fmt.Errorf("%w %w", errors.New("x"), errors.New("y")))
	joinType        = reflect.TypeOf(errors.Join(errors.New("a"), errors.New("b")))
)

// unwrapAll returns the errors err wraps directly.
func unwrapAll(err error) []error {
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			return []error{e}
		}
	case interface{ Unwrap() []error }:
		return u.Unwrap()
	}
	return nil
}

// withCause reports whether err is a context error with the cause the
// context was cancelled with, as ctxlock reports a wait cut short by a
// context cancelled with a cause: fmt.Errorf("%w: %w", ctx.Err(), cause).
// The cause is the caller's (the loss of the lock a Do runs under, say), not
// a fault of the call, however it reads.
func withCause(err error) bool {
	if reflect.TypeOf(err) != fmtWrapsType {
		return false
	}
	errs := unwrapAll(err)
	return len(errs) > 0 && (errs[0] == context.Canceled || errs[0] == context.DeadlineExceeded)
}

// findErrorTyper returns the ErrorType() of the first error in err's tree
// that has that method and a non-empty result, not looking into the causes
// of context errors (see withCause).
func findErrorTyper(err error, depth int) string {
	if err == nil || depth > maxDepth || withCause(err) {
		return ""
	}
	if et, ok := err.(interface{ ErrorType() string }); ok {
		if s := et.ErrorType(); s != "" {
			return s
		}
	}
	for _, e := range unwrapAll(err) {
		if s := findErrorTyper(e, depth+1); s != "" {
			return s
		}
	}
	return ""
}

// findSentinel returns the error type of the first ctxlock sentinel (a plain
// errors.New value whose text starts with "ctxlock: ") in err's tree; with
// skipCause, not in the causes of context errors (see withCause).
func findSentinel(err error, skipCause bool, depth int) string {
	if err == nil || depth > maxDepth || (skipCause && withCause(err)) {
		return ""
	}
	if reflect.TypeOf(err) == errorStringType {
		if msg := err.Error(); strings.HasPrefix(msg, sentinelPrefix) {
			return "ctxlock." + strings.ReplaceAll(strings.TrimPrefix(msg, sentinelPrefix), " ", "_")
		}
	}
	for _, e := range unwrapAll(err) {
		if s := findSentinel(e, skipCause, depth+1); s != "" {
			return s
		}
	}
	return ""
}

// findTyped returns the qualified type name of the first error in err's tree
// that is not a generic wrapper or a plain errors.New value.
func findTyped(err error, skipContext bool, depth int) string {
	if err == nil || depth > maxDepth {
		return ""
	}
	if skipContext && (err == context.Canceled || err == context.DeadlineExceeded || withCause(err)) {
		return ""
	}
	switch t := reflect.TypeOf(err); t {
	case errorStringType, fmtWrapType, fmtWrapsType, joinType:
	default:
		return typeName(t)
	}
	for _, e := range unwrapAll(err) {
		if s := findTyped(e, skipContext, depth+1); s != "" {
			return s
		}
	}
	return ""
}

// typeName is the package-qualified name of t, looking through one pointer.
func typeName(t reflect.Type) string {
	if pkg, name := t.PkgPath(), t.Name(); pkg != "" && name != "" {
		return pkg + "." + name
	}
	if t.Kind() == reflect.Pointer {
		if pkg, name := t.Elem().PkgPath(), t.Elem().Name(); pkg != "" && name != "" {
			return pkg + "." + name
		}
	}
	return t.String()
}

// hasFault reports whether err carries more than a context error: a ctxlock
// sentinel (such as ErrUnavailable, which marks backend faults) or an error
// with its own ErrorType, as when Lock joins the last backend fault to
// ctx.Err(). The cause of a context cancelled with one is not a fault, even
// a ctxlock error (see withCause).
func hasFault(err error) bool {
	if err == nil {
		return false
	}
	return findSentinel(err, true, 0) != "" || findErrorTyper(err, 0) != ""
}
