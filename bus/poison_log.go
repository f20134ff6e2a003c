package bus

import (
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// onPoisonPublishFailed logs, at WARN, a publish to the poison topic that
// failed (a full or unreachable Redis): the event is not sent again; its
// poisoned copy is tried again after retryIn, or, when retryIn is 0, the
// event stays queued (nacked) and its next handling tries the copy again.
func (k *sink) onPoisonPublishFailed(poisoned *message.Message, failures int, retryIn time.Duration, err error) {
	attrs := k.logAttrs(slog.LevelWarn, poisoned)
	if attrs == nil {
		return
	}
	msg := "memhook: cannot write to the poison queue, retrying; the event is not sent again"
	if retryIn == 0 {
		msg = "memhook: cannot write to the poison queue; the event stays queued, is not sent again, and is poisoned once the queue takes it"
	}
	k.b.log.Warn(msg, append(attrs, "failures", failures, "retry_in", retryIn, "error", err.Error())...)
}
