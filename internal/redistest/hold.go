package redistest

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// HoldNextPipeline is a go-redis hook that holds the next pipeline of the
// client it is added to before it is written, until Let is called: a call
// whose answer straggles, for as long as the test wants. Pipelines after
// that one, and single commands, pass.
type HoldNextPipeline struct {
	reached chan struct{}
	let     chan struct{}
	held    sync.Once
	letOnce sync.Once
}

// NewHoldNextPipeline returns a hook armed for the next pipeline. t's
// cleanup lets it go, so that no pipeline stays held past the test.
func NewHoldNextPipeline(t interface{ Cleanup(func()) }) *HoldNextPipeline {
	h := &HoldNextPipeline{reached: make(chan struct{}), let: make(chan struct{})}
	t.Cleanup(h.Let)
	return h
}

// Reached is closed once the held pipeline has reached the hook.
func (h *HoldNextPipeline) Reached() <-chan struct{} { return h.reached }

// Let lets the held pipeline (or, if none is held yet, the next one) go on.
// It is idempotent.
func (h *HoldNextPipeline) Let() { h.letOnce.Do(func() { close(h.let) }) }

// DialHook implements redis.Hook.
func (h *HoldNextPipeline) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (h *HoldNextPipeline) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook implements redis.Hook.
func (h *HoldNextPipeline) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		first := false
		h.held.Do(func() { first = true })
		if first {
			close(h.reached)
			<-h.let
		}
		return next(ctx, cmds)
	}
}
