package bus

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/verify"
)

// DefaultEndpoint names the endpoint the seed's MEM0_WEBHOOK_* variables
// (Config.WebhookURL and the fields beside it) define. An endpoints file
// may not use the name.
const DefaultEndpoint = "default"

// Endpoint is one receiver of webhooks beside the default one: every event
// its Events select is delivered to URL on a subscription of its own (on
// Redis its own consumer group on the events stream, on memory its own
// bounded queue), signed with its own secrets, retried on its own
// schedule. An endpoint that is dead, slow or paused never delays another.
// Zero values mean the default its comment names.
type Endpoint struct {
	// Name identifies the endpoint in logs, metrics, the status endpoint
	// and the dead-letter queue: 1 to 64 of [a-z0-9_-], unique; required.
	Name string
	// URL receives the webhooks, http or https; required.
	URL string
	// Events selects the events sent, as MEM0_WEBHOOK_EVENTS: "all", "none"
	// or a comma list; empty means all.
	Events string
	// Token is sent as "Authorization: Bearer <Token>"; empty sends none.
	Token string
	// Secret signs the webhooks, as MEM0_WEBHOOK_SECRET (several, space or
	// comma separated, while rotating); empty signs nothing.
	Secret string
	// LegacySecretHeader sends the first secret as-is in X-Webhook-Secret,
	// as the seed does for its one URL. Default false: only the default
	// endpoint keeps the seed's header (Config.DisableLegacySecretHeader).
	LegacySecretHeader bool
	// Timeout bounds one attempt; 0 means Config.Timeout.
	Timeout time.Duration
	// RetrySchedule is the wait before each retry; empty means the
	// Config's (Config.RetryDelays).
	RetrySchedule []time.Duration
	// RateLimit caps the attempts per second to URL, shared by every
	// router on Redis; zero means no limit. An event over the limit waits
	// without holding a worker.
	RateLimit RateLimit
	// Ordering is OrderingNone (or empty: events go out side by side, as
	// they come) or OrderingUser: the endpoint's events of one user_id are
	// attempted one at a time, in the order they were accepted; a retry
	// that waits holds back that user's later events only. Transports
	// memory and redis.
	Ordering string
	// Headers are added to every request. Authorization, Content-Type,
	// Content-Length, Host, User-Agent, X-Webhook-Secret and webhook-* are
	// memhook's own and refused.
	Headers map[string]string
}

// RateLimit is a number of attempts per period.
type RateLimit struct {
	Events int
	Per    time.Duration
}

// IsZero reports whether r sets no limit.
func (r RateLimit) IsZero() bool { return r.Events == 0 }

// String writes r as ParseRateLimit reads it ("50/s").
func (r RateLimit) String() string {
	if r.IsZero() {
		return ""
	}
	switch r.Per {
	case time.Second:
		return strconv.Itoa(r.Events) + "/s"
	case time.Minute:
		return strconv.Itoa(r.Events) + "/m"
	case time.Hour:
		return strconv.Itoa(r.Events) + "/h"
	}
	return strconv.Itoa(r.Events) + "/" + r.Per.String()
}

// ParseRateLimit reads "N/s", "N/m", "N/h" or "N/<Go duration>" ("100/10s").
func ParseRateLimit(s string) (RateLimit, error) {
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return RateLimit{}, fmt.Errorf("rate limit %q: want N/s, N/m, N/h or N/<duration> such as 50/s", s)
	}
	events, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || events <= 0 {
		return RateLimit{}, fmt.Errorf("rate limit %q: %q is not a whole number above 0", s, n)
	}
	var d time.Duration
	switch p := strings.TrimSpace(per); p {
	case "s", "sec", "second":
		d = time.Second
	case "m", "min", "minute":
		d = time.Minute
	case "h", "hour":
		d = time.Hour
	default:
		d, err = time.ParseDuration(p)
		if err != nil || d <= 0 {
			return RateLimit{}, fmt.Errorf("rate limit %q: %q is not s, m, h or a duration above 0", s, p)
		}
	}
	return RateLimit{Events: events, Per: d}, nil
}

// The orderings of an endpoint's deliveries (Endpoint.Ordering,
// MEMHOOK_ORDERING).
const (
	// OrderingNone: deliveries go side by side, retries wait on their
	// own; an event may overtake an earlier one of the same user.
	OrderingNone = "none"
	// OrderingUser: one user's events are attempted one at a time, in
	// the order accepted.
	OrderingUser = "user"
)

// ordered reports whether e's events of one user go out one at a time.
func (e Endpoint) ordered() bool { return e.Ordering == OrderingUser }

var endpointName = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// reservedHeader reports whether memhook sets header itself on every
// webhook, so that an endpoint may not.
func reservedHeader(name string) bool {
	switch c := http.CanonicalHeaderKey(name); {
	case c == "Authorization", c == "Content-Type", c == "Content-Length", c == "Host",
		c == "User-Agent", c == "X-Webhook-Secret", strings.HasPrefix(c, "Webhook-"):
		return true
	}
	return false
}

// EndpointError is a problem with one key of one endpoint. Error never holds
// a secret's or a token's value.
type EndpointError struct {
	Endpoint string // its name, or "#n" (1-based) when it has none
	Key      string // the key, as in the endpoints file (url, secret, …)
	Problem  string
}

// Error implements error.
func (e *EndpointError) Error() string {
	return fmt.Sprintf("endpoint %s: %s: %s", e.Endpoint, e.Key, e.Problem)
}

// Validate reports every problem of e at once (errors.Join of
// *EndpointError).
func (e Endpoint) Validate() error {
	name := e.Name
	if name == "" {
		name = "(unnamed)"
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &EndpointError{Endpoint: name, Key: key, Problem: fmt.Sprintf(format, args...)})
	}
	switch {
	case e.Name == "":
		bad("name", "required")
	case !endpointName.MatchString(e.Name):
		bad("name", "%q must be 1 to 64 of a-z, 0-9, _ and -", e.Name)
	}
	if e.URL == "" {
		bad("url", "required")
	} else if err := handlers.ValidateURL(e.URL); err != nil {
		bad("url", "%v", err) // redacts credentials
	}
	if e.Events != "" {
		if _, err := event.ParseSet(e.Events); err != nil {
			bad("events", "%v", err)
		}
	}
	if strings.ContainsFunc(e.Token, unicode.IsControl) {
		bad("token", "holds a line break or another control character") // never echoes the token
	}
	if e.Secret != "" {
		if _, err := verify.ParseSecrets(e.Secret); err != nil {
			bad("secret", "%v", err) // never echoes the secret
		}
	}
	if e.Timeout < 0 {
		bad("timeout", "must be more than 0, got %s", e.Timeout)
	}
	for i, d := range e.RetrySchedule {
		if d <= 0 {
			bad("retry_schedule", "entry %d must be more than 0, got %s", i+1, d)
		}
	}
	if !e.RateLimit.IsZero() && (e.RateLimit.Events < 0 || e.RateLimit.Per <= 0) {
		bad("rate_limit", "want a number of events above 0 per a period above 0, got %d per %s", e.RateLimit.Events, e.RateLimit.Per)
	}
	switch e.Ordering {
	case "", OrderingNone, OrderingUser:
	default:
		bad("ordering", "want none or user, got %q", e.Ordering)
	}
	for k, v := range e.Headers {
		switch {
		case reservedHeader(k):
			bad("headers", "%s is set by memhook and may not be given", k)
		case !validHeaderName(k):
			bad("headers", "%q is not a header name", k)
		case strings.ContainsAny(v, "\r\n\x00"):
			bad("headers", "the value of %s holds a line break or NUL", k)
		}
	}
	return errors.Join(errs...)
}

// validHeaderName reports whether k is an HTTP token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r >= 0x7f || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// reservedNameProblem is the problem of an endpoint named DefaultEndpoint.
const reservedNameProblem = DefaultEndpoint + " is the endpoint of MEM0_WEBHOOK_URL; give this one another name"

// validateEndpoints checks every endpoint and that their names are unique
// and none is DefaultEndpoint.
func validateEndpoints(eps []Endpoint) error {
	var errs []error
	seen := map[string]int{}
	for i, e := range eps {
		if err := e.Validate(); err != nil {
			errs = append(errs, err)
		}
		switch {
		case e.Name == DefaultEndpoint:
			errs = append(errs, &EndpointError{Endpoint: e.Name, Key: "name",
				Problem: reservedNameProblem})
		case e.Name != "" && seen[e.Name] > 0:
			errs = append(errs, &EndpointError{Endpoint: e.Name, Key: "name",
				Problem: fmt.Sprintf("endpoint %d has the same name as endpoint %d", i+1, seen[e.Name])})
		}
		if e.Name != "" && seen[e.Name] == 0 {
			seen[e.Name] = i + 1
		}
	}
	return errors.Join(errs...)
}
