package postgres

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ctxlock/ctxlock"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err       error
		transient bool
	}{
		{&pgconn.PgError{Code: "08006"}, true},  // connection failure
		{&pgconn.PgError{Code: "53300"}, true},  // too many connections
		{&pgconn.PgError{Code: "40001"}, true},  // serialization failure
		{&pgconn.PgError{Code: "40003"}, true},  // statement completion unknown
		{&pgconn.PgError{Code: "40P01"}, true},  // deadlock
		{&pgconn.PgError{Code: "57P01"}, true},  // admin shutdown
		{&pgconn.PgError{Code: "25006"}, true},  // read-only transaction
		{&pgconn.PgError{Code: "42P01"}, false}, // undefined table
		{&pgconn.PgError{Code: "42501"}, false}, // insufficient privilege
		{&pgconn.PgError{Code: "22021"}, false}, // bad encoding
		{&pgconn.PgError{Code: "40002"}, false}, // integrity constraint violation
		{context.DeadlineExceeded, true},
		{io.ErrUnexpectedEOF, true},
	} {
		got := classify("op", tc.err)
		if errors.Is(got, ctxlock.ErrUnavailable) != tc.transient {
			t.Errorf("classify(%v) = %v; transient %v, want %v", tc.err, got, !tc.transient, tc.transient)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("classify(%v) = %v: does not wrap the error", tc.err, got)
		}
	}
}
