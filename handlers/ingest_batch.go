package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/bus/event"
)

// MaxBatchEvents caps the events of one POST /ingest/batch.
const MaxBatchEvents = event.MaxBatchEvents

// BatchAnswer is the body of the answers of POST /ingest/batch.
type BatchAnswer = event.BatchAnswer

// maxBatchErrors caps the event errors one 4xx answer lists.
const maxBatchErrors = 10

// ingestBatch serves POST /ingest/batch: a JSON array of envelopes, each
// checked as POST /ingest checks one. Nothing is queued unless every event
// is valid (400 for malformed JSON, 422 naming each invalid event by its
// index). Events are then queued in order; an event whose id was accepted
// within the replay window is counted, not queued again, so that a batch
// sent again after a lost answer creates no duplicate webhook. When the
// queue fills up the answer is 503 with Retry-After and BatchAnswer.Accepted
// saying how many of the first events were taken. The valid trace
// contexts of event.HeaderBatchTraceparents go with their events.
func (a *API) ingestBatch(replays *replayGuard, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readJSONBody(w, r)
		if !ok {
			return
		}
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			writeError(w, http.StatusBadRequest, "body is not a JSON array of events: "+err.Error())
			return
		}
		switch {
		case len(raws) == 0:
			writeError(w, http.StatusBadRequest, "empty batch: send at least one event")
			return
		case len(raws) > MaxBatchEvents:
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("batch of %d events; at most %d per request", len(raws), MaxBatchEvents))
			return
		}
		msgs := make([]*message.Message, len(raws))
		var problems []string
		malformed := false
		for i, raw := range raws {
			env, err := event.Decode(raw)
			if err != nil {
				malformed = malformed || errors.Is(err, event.ErrMalformed)
				if len(problems) < maxBatchErrors {
					problems = append(problems, fmt.Sprintf("event %d: %v", i, err))
				}
				continue
			}
			msgs[i] = eventMessage(raw, env, "")
		}
		if tps := strings.Split(r.Header.Get(event.HeaderBatchTraceparents), ","); len(tps) == len(msgs) && problems == nil {
			for i, tp := range tps {
				if tp = strings.TrimSpace(tp); ValidTraceparent(tp) {
					msgs[i].Metadata.Set(TraceparentKey, tp)
				}
			}
		}
		if problems != nil {
			code := http.StatusUnprocessableEntity
			if malformed {
				code = http.StatusBadRequest
			}
			writeError(w, code, "nothing queued: "+strings.Join(problems, "; "))
			return
		}
		var ans BatchAnswer
		for _, msg := range msgs {
			switch state, reason := replays.begin(r.Context(), msg.UUID); state {
			case replayDone:
				ans.Accepted++
				ans.Duplicates++
				continue
			case replayLater:
				ans.Error = reason
				retryLater(w, ans)
				return
			}
			if err := a.Ingest(msg); err != nil {
				replays.end(r.Context(), msg.UUID, false)
				if errors.Is(err, ErrBusy) {
					ans.Error = "delivery queue is full; retry the events not accepted later"
					w.Header().Set("Retry-After", "1")
					writeJSON(w, http.StatusServiceUnavailable, ans)
					return
				}
				log.Error("memhook: ingested event not queued", "id", msg.UUID, "error", err.Error())
				ans.Error = "event " + msg.UUID + " not queued"
				writeJSON(w, http.StatusInternalServerError, ans)
				return
			}
			replays.end(r.Context(), msg.UUID, true)
			ans.Accepted++
		}
		if ans.Duplicates > 0 {
			log.Info("memhook: duplicate events in a batch answered without queueing", "duplicates", ans.Duplicates)
		}
		writeJSON(w, http.StatusOK, ans)
	})
}
