package ctxlockotel_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/ctxlock/ctxlock"
	ctxlockotel "github.com/ctxlock/ctxlock/otel"
)

// ErrorType gives the error.type attribute of spans: a short,
// low-cardinality name, the same for every error of a kind however it was
// wrapped.
func ExampleErrorType() {
	refresh := fmt.Errorf("refresh %q: %w", "orders/42", ctxlock.ErrLost)
	outage := ctxlock.Unavailable(errors.New("dial tcp 10.0.0.7:6379: connection refused"))
	fmt.Println(ctxlockotel.ErrorType(refresh))
	fmt.Println(ctxlockotel.ErrorType(outage))
	fmt.Println(ctxlockotel.ErrorType(fmt.Errorf("lock: %w", context.DeadlineExceeded)))
	fmt.Println(ctxlockotel.ErrorType(errors.New("something else")))
	// Output:
	// ctxlock.lock_lost
	// ctxlock.backend_unavailable
	// context.DeadlineExceeded
	// _OTHER
}

// MetricNames lists the instruments, for instance to check that a
// dashboard's queries name existing metrics.
func ExampleMetricNames() {
	for _, name := range ctxlockotel.MetricNames() {
		fmt.Println(name)
	}
	// Output:
	// ctxlock.acquire.duration
	// ctxlock.wait.duration
	// ctxlock.contention
	// ctxlock.held
	// ctxlock.hold.duration
	// ctxlock.hold.lost
	// ctxlock.refresh.batch.size
	// ctxlock.batch.duration
	// ctxlock.release.pending
}
