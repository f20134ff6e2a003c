// Package wmlog adapts log/slog to watermill.LoggerAdapter, checking the
// level before building any attribute: watermill's own slog adapter turns
// the fields map into attributes first, which costs allocations on every
// message even when trace and debug are off.
package wmlog

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// LevelTrace is where watermill's Trace lines go.
const LevelTrace = slog.LevelDebug - 4

// Adapter is a watermill.LoggerAdapter over a *slog.Logger. Watermill's
// Info lines (the router's own chatter) are logged at InfoLevel.
type Adapter struct {
	Logger *slog.Logger
	// InfoLevel is the level of watermill's Info lines; memhook uses
	// slog.LevelDebug so that only its own lines show at INFO.
	InfoLevel slog.Level
}

var _ watermill.LoggerAdapter = Adapter{}

// New returns an Adapter logging watermill's Info at infoLevel.
func New(l *slog.Logger, infoLevel slog.Level) Adapter {
	return Adapter{Logger: l, InfoLevel: infoLevel}
}

func (a Adapter) log(level slog.Level, msg string, err error, fields watermill.LogFields) {
	ctx := context.Background()
	if !a.Logger.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields)+1)
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	a.Logger.LogAttrs(ctx, level, msg, attrs...)
}

// Error implements watermill.LoggerAdapter.
func (a Adapter) Error(msg string, err error, fields watermill.LogFields) {
	a.log(slog.LevelError, msg, err, fields)
}

// Info implements watermill.LoggerAdapter.
func (a Adapter) Info(msg string, fields watermill.LogFields) { a.log(a.InfoLevel, msg, nil, fields) }

// Debug implements watermill.LoggerAdapter.
func (a Adapter) Debug(msg string, fields watermill.LogFields) {
	a.log(slog.LevelDebug, msg, nil, fields)
}

// Trace implements watermill.LoggerAdapter.
func (a Adapter) Trace(msg string, fields watermill.LogFields) { a.log(LevelTrace, msg, nil, fields) }

// With implements watermill.LoggerAdapter.
func (a Adapter) With(fields watermill.LogFields) watermill.LoggerAdapter {
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	return Adapter{Logger: a.Logger.With(args...), InfoLevel: a.InfoLevel}
}
