package election

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// hclogZap adapts zap to the hclog.Logger that raft wants. Raft's Info lines
// (elections, state changes) stay Info; its Trace lines become Debug.
type hclogZap struct {
	z       *zap.Logger
	name    string
	implied []interface{}
}

var _ hclog.Logger = (*hclogZap)(nil)

func newHclog(z *zap.Logger, name string) hclog.Logger {
	return &hclogZap{z: z.Named(name), name: name}
}

func (h *hclogZap) Log(level hclog.Level, msg string, args ...interface{}) {
	lvl := zapLevel(level)
	if ce := h.z.Check(lvl, msg); ce != nil {
		ce.Write(h.fields(args)...)
	}
}

func zapLevel(level hclog.Level) zapcore.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return zapcore.DebugLevel
	case hclog.Warn:
		return zapcore.WarnLevel
	case hclog.Error:
		return zapcore.ErrorLevel
	default:
		return zapcore.InfoLevel
	}
}

// fields turns hclog's alternating key/value arguments into zap fields.
func (h *hclogZap) fields(args []interface{}) []zap.Field {
	all := append(append([]interface{}{}, h.implied...), args...)
	fs := make([]zap.Field, 0, len(all)/2+1)
	for i := 0; i < len(all); i += 2 {
		key := fmt.Sprint(all[i])
		if i+1 >= len(all) {
			fs = append(fs, zap.Any("extra", all[i]))
			break
		}
		if err, ok := all[i+1].(error); ok {
			fs = append(fs, zap.NamedError(key, err))
			continue
		}
		fs = append(fs, zap.Any(key, all[i+1]))
	}
	return fs
}

func (h *hclogZap) Trace(msg string, args ...interface{}) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogZap) Debug(msg string, args ...interface{}) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogZap) Info(msg string, args ...interface{})  { h.Log(hclog.Info, msg, args...) }
func (h *hclogZap) Warn(msg string, args ...interface{})  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogZap) Error(msg string, args ...interface{}) { h.Log(hclog.Error, msg, args...) }

func (h *hclogZap) IsTrace() bool { return h.z.Core().Enabled(zapcore.DebugLevel) }
func (h *hclogZap) IsDebug() bool { return h.z.Core().Enabled(zapcore.DebugLevel) }
func (h *hclogZap) IsInfo() bool  { return h.z.Core().Enabled(zapcore.InfoLevel) }
func (h *hclogZap) IsWarn() bool  { return h.z.Core().Enabled(zapcore.WarnLevel) }
func (h *hclogZap) IsError() bool { return h.z.Core().Enabled(zapcore.ErrorLevel) }

func (h *hclogZap) ImpliedArgs() []interface{} { return h.implied }

func (h *hclogZap) With(args ...interface{}) hclog.Logger {
	return &hclogZap{z: h.z, name: h.name, implied: append(append([]interface{}{}, h.implied...), args...)}
}

func (h *hclogZap) Name() string { return h.name }

func (h *hclogZap) Named(name string) hclog.Logger {
	return &hclogZap{z: h.z.Named(name), name: h.name + "." + name, implied: h.implied}
}

func (h *hclogZap) ResetNamed(name string) hclog.Logger {
	return &hclogZap{z: h.z.Named(name), name: name, implied: h.implied}
}

// SetLevel is a no-op: the zap core decides what is written.
func (h *hclogZap) SetLevel(hclog.Level) {}

func (h *hclogZap) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Debug
	case h.IsInfo():
		return hclog.Info
	case h.IsWarn():
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (h *hclogZap) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(nil), "", 0)
}

func (h *hclogZap) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &levelWriter{z: h.z}
}

// logPrefixes maps the level tags of std-logger lines to zap levels.
var logPrefixes = []struct {
	prefix string
	level  zapcore.Level
}{
	{"[TRACE]", zapcore.DebugLevel}, {"[DEBUG]", zapcore.DebugLevel}, {"[INFO]", zapcore.InfoLevel},
	{"[WARN]", zapcore.WarnLevel}, {"[ERR]", zapcore.ErrorLevel}, {"[ERROR]", zapcore.ErrorLevel},
}

// levelWriter turns "[LEVEL] text" lines (memberlist, std loggers) into zap
// entries at that level.
type levelWriter struct{ z *zap.Logger }

func (w *levelWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := strings.TrimSpace(string(line))
		lvl := zapcore.InfoLevel
		for _, pl := range logPrefixes {
			if i := strings.Index(msg, pl.prefix); i >= 0 {
				lvl, msg = pl.level, strings.TrimSpace(msg[i+len(pl.prefix):])
				break
			}
		}
		if ce := w.z.Check(lvl, msg); ce != nil {
			ce.Write()
		}
	}
	return len(p), nil
}
