package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	whttp "github.com/ThreeDotsLabs/watermill-http/v2/pkg/http"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/go-chi/chi"
	"github.com/google/uuid"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/verify"
)

// MaxBodyBytes caps every request body the API reads.
const MaxBodyBytes = verify.DefaultMaxBodyBytes

// Paths of the router process's endpoints.
const (
	PathIncoming = "/webhooks/memory"
	PathStatus   = "/webhooks/memory/status"
	PathTest     = "/webhooks/memory/test"
	PathIngest   = event.IngestPath
	// PathIngestBatch takes several events in one request (a JSON array
	// of envelopes): what transport "http" sends when events queue up.
	PathIngestBatch = event.IngestBatchPath
	PathHealth      = "/healthz"
	PathReady       = "/readyz"
	PathMetrics     = "/metrics"
	// PathEndpoints lists the endpoints; PathEndpoints + "/{name}/pause"
	// and "/resume" change one's state.
	PathEndpoints = "/api/endpoints"
)

// ErrUnknownEndpoint is what API.SetEndpointState returns (wrapped or
// not) for an endpoint it does not know; the API answers 404.
var ErrUnknownEndpoint = errors.New("handlers: no such endpoint")

// ErrBusy is what a Publish func returns (wrapped or not) when the
// delivery queue cannot take more now; the API answers 503 with
// Retry-After, so that the sender tries again.
var ErrBusy = errors.New("handlers: delivery queue is full")

// API is the HTTP face of `memhook serve`: the seed's three endpoints,
// ingest for applications on transport "http", health, readiness and
// metrics. It does not know the bus: the process wires it with funcs.
type API struct {
	// Incoming publishes an event received on POST /webhooks/memory to the
	// incoming topic; required.
	Incoming func(*message.Message) error
	// Ingest hands an event received on POST /ingest to the delivery queue;
	// required. Return ErrBusy when the queue is full.
	Ingest func(*message.Message) error
	// Status returns the body of GET /webhooks/memory/status; required.
	Status func() Status
	// Test sends a test webhook now and returns the body of POST
	// /webhooks/memory/test; required.
	Test func(ctx context.Context) TestResult
	// Ready reports whether the transport is connected (GET /readyz); nil
	// means always ready. GET /readyz answers anyone 200 or 503 with just
	// the status; the error's text (which may name the Redis host and
	// port) only to a caller with AdminToken, or to anyone when AdminToken
	// is unset (as status).
	Ready func(ctx context.Context) error
	// Metrics serves GET /metrics; nil answers 404.
	Metrics http.Handler
	// Endpoints returns the body of GET /api/endpoints: each endpoint
	// with its state and counters. nil answers 404, as do the pause and
	// resume routes.
	Endpoints func() any
	// SetEndpointState pauses (pause true) or resumes endpoint name, for
	// POST /api/endpoints/{name}/pause and /resume. It returns an error
	// wrapping ErrUnknownEndpoint for a name it does not know (404).
	SetEndpointState func(ctx context.Context, name string, pause bool) error

	// AdminToken, when set, is required as a bearer token by status and
	// test.
	AdminToken string
	// IncomingToken, when set, is required as a bearer token by POST
	// /webhooks/memory.
	IncomingToken string
	// IngestToken, when set, is required as a bearer token by POST /ingest.
	IngestToken string
	// IncomingSecrets, when set, admit POST /webhooks/memory requests
	// signed the Standard Webhooks way with one of them, as an alternative
	// to IncomingToken.
	IncomingSecrets []verify.Secret
	// IngestSecrets does the same for POST /ingest.
	IngestSecrets []verify.Secret
	// ReplayWindow is how long a processed webhook id is remembered: a
	// request with the same id within it is answered 200 without being
	// processed again. 0 means verify.DefaultTolerance (5 minutes), the
	// window in which a signed request is accepted at all.
	ReplayWindow time.Duration
	// Seen keeps the ids the duplicate guard of the event endpoints has
	// seen (see ReplayWindow). nil means NewMemorySeen(DefaultMaxSeen):
	// one process's memory, so a request replayed to another router, or
	// after a restart, is processed again; `memhook serve` on transport
	// redis sets a transports.RedisSeen shared by all its routers.
	Seen SeenStore
	// IngestWorkers is how many ingested requests are handed to the queue
	// at once; 0 means 8.
	IngestWorkers int

	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Status is the body of GET /webhooks/memory/status: the seed's shape plus
// memhook's counters.
type Status struct {
	Status        string        `json:"status"`
	WebhookConfig WebhookConfig `json:"webhook_config"`
	Transport     string        `json:"transport"`
	Counters      any           `json:"counters"`
	// Endpoints lists each endpoint with its state and counters (the
	// default one first); webhook_config above is the default endpoint's,
	// or the first one's.
	Endpoints any `json:"endpoints,omitempty"`
}

// WebhookConfig is the seed's "webhook_config". WebhookURL is shown
// redacted; secrets only as has_token / has_secret.
type WebhookConfig struct {
	Enabled       bool     `json:"enabled"`
	WebhookURL    string   `json:"webhook_url"`
	Timeout       float64  `json:"timeout"`
	RetryCount    int      `json:"retry_count"`
	EnabledEvents []string `json:"enabled_events"`
	HasToken      bool     `json:"has_token"`
	HasSecret     bool     `json:"has_secret"`
}

// TestResult is the body of POST /webhooks/memory/test: the seed's fields
// plus the outcome.
type TestResult struct {
	Status         string `json:"status"`
	TestSent       bool   `json:"test_sent"`
	WebhookEnabled bool   `json:"webhook_enabled"`
	WebhookURL     string `json:"webhook_url"`
	Delivered      bool   `json:"delivered"`
	ReceiverStatus int    `json:"receiver_status"`
	Attempts       int    `json:"attempts"`
	Error          string `json:"error,omitempty"`
}

// Handler builds the endpoints and starts the goroutines that move ingested
// events to the queue; they stop when ctx is done. It fails when a
// required func is missing.
func (a *API) Handler(ctx context.Context) (http.Handler, error) {
	var errs []error
	if a.Incoming == nil {
		errs = append(errs, errors.New("handlers: API.Incoming is required"))
	}
	if a.Ingest == nil {
		errs = append(errs, errors.New("handlers: API.Ingest is required"))
	}
	if a.Status == nil {
		errs = append(errs, errors.New("handlers: API.Status is required"))
	}
	if a.Test == nil {
		errs = append(errs, errors.New("handlers: API.Test is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	ingest, err := a.ingestHandler(ctx, log)
	if err != nil {
		return nil, err
	}
	incomingCheck, err := newSenderCheck("incoming", a.IncomingToken, a.IncomingSecrets, log)
	if err != nil {
		return nil, err
	}
	ingestCheck, err := newSenderCheck("ingest", a.IngestToken, a.IngestSecrets, log)
	if err != nil {
		return nil, err
	}
	adminCheck, err := newSenderCheck("admin", a.AdminToken, nil, log) // bearer token only
	if err != nil {
		return nil, err
	}
	window := a.ReplayWindow
	if window <= 0 {
		window = verify.DefaultTolerance
	}
	seen := a.Seen
	if seen == nil {
		seen = NewMemorySeen(DefaultMaxSeen)
	}
	replays := &replayGuard{store: seen, window: window, log: log}
	processed := map[string]any{"status": "processed", "action": "memory_logged", "duplicate": true}
	mux := http.NewServeMux()
	mux.Handle("POST "+PathIncoming, incomingCheck.wrap(replays.once(requestID, processed, http.HandlerFunc(a.incoming(log)))))
	mux.Handle("GET "+PathStatus, adminCheck.wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})))
	mux.Handle("POST "+PathTest, adminCheck.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Test(r.Context()))
	})))
	mux.Handle("POST "+PathIngest, ingestCheck.wrap(replays.once(requestID, map[string]any{"duplicate": true}, ingest)))
	mux.Handle("POST "+PathIngestBatch, ingestCheck.wrap(a.ingestBatch(replays, log)))
	mux.HandleFunc("GET "+PathHealth, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET "+PathReady, func(w http.ResponseWriter, r *http.Request) {
		if a.Ready != nil {
			if err := a.Ready(r.Context()); err != nil {
				ans := readiness{Status: "not ready"}
				if adminCheck.allows(r) { // the reason names hosts and ports
					ans.Error = err.Error()
				}
				writeJSON(w, http.StatusServiceUnavailable, ans)
				return
			}
		}
		writeJSON(w, http.StatusOK, readiness{Status: "ready"})
	})
	if a.Metrics != nil {
		mux.Handle("GET "+PathMetrics, a.Metrics)
	}
	if a.Endpoints != nil {
		mux.Handle("GET "+PathEndpoints, adminCheck.wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"endpoints": a.Endpoints()})
		})))
	}
	if a.SetEndpointState != nil {
		for _, verb := range []string{"pause", "resume"} {
			pause := verb == "pause"
			mux.Handle("POST "+PathEndpoints+"/{name}/"+verb, adminCheck.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				name := r.PathValue("name")
				err := a.SetEndpointState(r.Context(), name, pause)
				switch {
				case errors.Is(err, ErrUnknownEndpoint):
					writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint named %q", name))
				case err != nil:
					writeError(w, http.StatusInternalServerError, err.Error())
				default:
					writeJSON(w, http.StatusOK, map[string]string{"status": verb + "d", "endpoint": name})
				}
			})))
		}
	}
	// Known paths with another method: 405 in JSON (the mux's own answer is
	// plain text); anything else: 404 in JSON.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		allow := map[string]string{
			PathIncoming: "POST", PathStatus: "GET", PathTest: "POST", PathIngest: "POST", PathIngestBatch: "POST",
			PathHealth: "GET", PathReady: "GET", PathMetrics: "GET",
		}
		if m, ok := allow[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, m))
			return
		}
		writeError(w, http.StatusNotFound, "no endpoint at "+r.URL.Path)
	})
	return mux, nil
}

// requestID is the id a sender gives a request: the Standard Webhooks
// webhook-id, else watermill-http's message UUID header.
func requestID(r *http.Request) string {
	if id := r.Header.Get(verify.HeaderID); id != "" {
		return id
	}
	return r.Header.Get(whttp.HeaderUUID)
}

// readEnvelope applies the checks every event endpoint shares: JSON
// content type (415), body at most MaxBodyBytes (413), well-formed JSON
// (400) and a valid envelope (422). On failure it has answered.
func readEnvelope(w http.ResponseWriter, r *http.Request) ([]byte, event.Envelope, bool) {
	body, ok := readJSONBody(w, r)
	if !ok {
		return nil, event.Envelope{}, false
	}
	env, err := event.Decode(body)
	if err != nil {
		if errors.Is(err, event.ErrMalformed) {
			writeError(w, http.StatusBadRequest, err.Error())
		} else {
			writeError(w, http.StatusUnprocessableEntity, err.Error())
		}
		return nil, event.Envelope{}, false
	}
	return body, env, true
}

// readJSONBody checks the content type (415) and reads the body, at most
// MaxBodyBytes (413). On failure it has answered.
func readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q is not application/json", ct))
			return nil, false
		}
	} else {
		writeError(w, http.StatusUnsupportedMediaType, "content type missing; send application/json")
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", MaxBodyBytes))
		} else {
			writeError(w, http.StatusBadRequest, "cannot read body")
		}
		return nil, false
	}
	return body, true
}

// eventMessage builds the Watermill message of a received envelope: the
// envelope's id (else the given one, else a new one) as UUID, event_type
// and user_id in metadata.
func eventMessage(body []byte, env event.Envelope, fallbackID string) *message.Message {
	id := env.ID
	if id == "" {
		id = fallbackID
	}
	if id == "" {
		id = uuid.NewString()
	}
	msg := message.NewMessage(id, body)
	msg.Metadata.Set(event.MetaType, string(env.Event))
	msg.Metadata.Set(event.MetaUserID, env.UserID)
	return msg
}

func (a *API) incoming(log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, env, ok := readEnvelope(w, r)
		if !ok {
			return
		}
		msg := eventMessage(body, env, r.Header.Get("webhook-id"))
		if err := a.Incoming(msg); err != nil {
			if errors.Is(err, ErrBusy) {
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusServiceUnavailable, "incoming queue is full; retry later")
				return
			}
			log.Error("memhook: incoming event not published", "id", msg.UUID, "error", err.Error())
			writeError(w, http.StatusInternalServerError, "incoming event not published")
			return
		}
		log.Info("memhook: incoming event received", "event", env.Event, "id", msg.UUID, "user_id", env.UserID)
		writeJSON(w, http.StatusOK, map[string]string{"status": "processed", "action": "memory_logged"})
	}
}

// ingestHandler serves POST /ingest with watermill-http's Subscriber
// mounted on a chi router: a guard validates the request first (answering
// JSON errors), then the subscriber turns it into a message, and IngestWorkers
// goroutines hand messages to Ingest; the request is answered only once the
// event is in the delivery queue (200), or refused (503 when full).
func (a *API) ingestHandler(ctx context.Context, log *slog.Logger) (http.Handler, error) {
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			body, env, ok := readEnvelope(w, req)
			if !ok {
				return
			}
			msg := eventMessage(body, env, req.Header.Get(whttp.HeaderUUID))
			meta, _ := json.Marshal(msg.Metadata)
			req.Header.Set(whttp.HeaderUUID, msg.UUID)
			req.Header.Set(whttp.HeaderMetadata, string(meta))
			req.Body = io.NopCloser(bytes.NewReader(body))
			next.ServeHTTP(w, req)
		})
	})
	sub, err := whttp.NewSubscriber("", whttp.SubscriberConfig{Router: r}, nil)
	if err != nil {
		return nil, err
	}
	msgs, err := sub.Subscribe(ctx, PathIngest)
	if err != nil {
		return nil, err
	}
	workers := a.IngestWorkers
	if workers <= 0 {
		workers = 8
	}
	for range workers {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case msg := <-msgs:
					if err := a.Ingest(msg); err != nil {
						code := http.StatusInternalServerError
						if errors.Is(err, ErrBusy) {
							code = http.StatusServiceUnavailable
						} else {
							log.Error("memhook: ingested event not queued", "id", msg.UUID, "error", err.Error())
						}
						whttp.SetResponseStatusCode(msg, code)
						msg.Nack()
						continue
					}
					msg.Ack()
				}
			}
		}()
	}
	return r, nil
}

// readiness is the body of GET /readyz: {"status":"ready"}, or
// {"status":"not ready"} with, for a caller the admin check admits, the
// reason in "error".
type readiness struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: strings.ReplaceAll(msg, "\n", "; ")})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
