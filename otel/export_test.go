package ctxlockotel

import (
	"testing"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// PrometheusSeries exposes prometheusNames (dashboard_test.go) to the
// external test package: the series names, and their labels, that the
// OpenTelemetry Prometheus exporter makes of rm.
func PrometheusSeries(t *testing.T, rm metricdata.ResourceMetrics) map[string]map[string]bool {
	return prometheusNames(t, rm)
}
