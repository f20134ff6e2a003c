package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/memhook/memhook/admin"
	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/internal/receiver"
)

// The configured secrets: none may appear in any answer.
const (
	adminToken    = "admin-token-5e1b9d3c"
	webhookToken  = "wh-token-0a7c4e2f"
	webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	crmToken      = "crm-token-b6d20f81"
	crmSecret     = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
)

var secrets = []string{adminToken, webhookToken, webhookSecret, crmToken, crmSecret,
	"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="}

// fixture is an admin API over a real bus on memory whose default
// endpoint failed an event for good (a dead letter with two attempts)
// and whose crm endpoint delivered it.
type fixture struct {
	srv     *httptest.Server
	b       *bus.Bus
	eventID string
	failing *atomic.Bool
	// answers collects every body the API gave, for the secrets check.
	answers *bytes.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	failing := &atomic.Bool{}
	failing.Store(true)
	respond := func(w http.ResponseWriter, _ *http.Request, _ int) int {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable) // before the body (the receiver's own WriteHeader is then ignored)
			_, _ = io.WriteString(w, "down for maintenance")
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	def, err := receiver.Start(respond, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = def.Close() })
	crm, err := receiver.Start(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = crm.Close() })
	b, err := bus.New(bus.Config{
		WebhookURL:    def.URL + "/hook?key=" + webhookToken, // a query is a credential too: never shown
		Token:         webhookToken,
		Secret:        webhookSecret,
		RetrySchedule: []time.Duration{10 * time.Millisecond},
		PauseAfter:    bus.Disabled,
		Endpoints:     []bus.Endpoint{{Name: "crm", URL: crm.URL + "/crm", Token: crmToken, Secret: crmSecret}},
	}, bus.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	h, err := admin.NewHandler(admin.Config{Bus: b, Token: adminToken, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if err := b.Emit(context.Background(), event.Event{Type: event.MemoryAdded, UserID: "u1", Data: map[string]string{"memory_id": "m1"}}); err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, b: b, failing: failing, answers: &bytes.Buffer{}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		dls, err := b.DeadLetters(context.Background(), bus.DeadLetterFilter{Endpoint: bus.DefaultEndpoint})
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) == 1 && crm.Count() == 1 {
			f.eventID = dls[0].EventID
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter in 10s (%d) or crm not delivered (%d)", len(dls), crm.Count())
		}
		time.Sleep(10 * time.Millisecond) // polling the bus: nothing to wait on
	}
}

// poison has one more event fail for good on the default endpoint and
// returns its dead letter's id.
func (f *fixture) poison(t *testing.T) string {
	t.Helper()
	f.failing.Store(true)
	before, err := f.b.DeadLetters(context.Background(), bus.DeadLetterFilter{Endpoint: bus.DefaultEndpoint, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.Emit(context.Background(), event.Event{Type: event.MemoryAdded, UserID: "u2", Data: map[string]string{"memory_id": "m2"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		dls, err := f.b.DeadLetters(context.Background(), bus.DeadLetterFilter{Endpoint: bus.DefaultEndpoint, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, dl := range dls {
			if !slices.ContainsFunc(before, func(b bus.DeadLetter) bool { return b.ID == dl.ID }) {
				return dl.ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no new dead letter in 10s")
		}
		time.Sleep(10 * time.Millisecond) // polling the bus: nothing to wait on
	}
}

// call sends one request with the admin token (unless token is false)
// and returns the status and body.
func (f *fixture) call(t *testing.T, method, path string, body []byte, token bool) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token {
		req.Header.Set("Authorization", "Bearer "+adminToken)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f.answers, "%s %s %d\n%s\n", method, path, resp.StatusCode, resp.Header)
	f.answers.Write(b)
	return resp.StatusCode, resp.Header, b
}

// The OpenAPI document, as the API serves it and as a tool reads it.
type document struct {
	OpenAPI string                          `json:"openapi"`
	Paths   map[string]map[string]operation `json:"paths"`
	Comps   struct {
		Parameters map[string]parameter       `json:"parameters"`
		Responses  map[string]json.RawMessage `json:"responses"`
		Schemas    map[string]schema          `json:"schemas"`
	} `json:"components"`
}

type operation struct {
	Parameters  []parameter                `json:"parameters"`
	RequestBody *requestBody               `json:"requestBody"`
	Responses   map[string]json.RawMessage `json:"responses"`
	Security    *[]map[string][]string     `json:"security"`
}

type parameter struct {
	Ref      string `json:"$ref"`
	Name     string `json:"name"`
	In       string `json:"in"`
	Required bool   `json:"required"`
	Schema   schema `json:"schema"`
	Example  any    `json:"example"`
}

type schema struct {
	Ref        string            `json:"$ref"`
	Type       string            `json:"type"`
	Format     string            `json:"format"`
	Enum       []string          `json:"enum"`
	Minimum    *float64          `json:"minimum"`
	Maximum    *float64          `json:"maximum"`
	MinLength  *int              `json:"minLength"`
	Required   []string          `json:"required"`
	Properties map[string]schema `json:"properties"`
}

type requestBody struct {
	Content map[string]struct {
		Schema   schema `json:"schema"`
		Example  any    `json:"example"`
		Examples map[string]struct {
			Value any `json:"value"`
		} `json:"examples"`
	} `json:"content"`
}

func (d *document) param(p parameter) parameter {
	if p.Ref != "" {
		return d.Comps.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
	}
	return p
}

// responseSchema resolves the JSON schema of a documented response.
func (d *document) responseSchema(t *testing.T, raw json.RawMessage) schema {
	t.Helper()
	var r struct {
		Ref     string `json:"$ref"`
		Content map[string]struct {
			Schema schema `json:"schema"`
		} `json:"content"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.Ref != "" {
		return d.responseSchema(t, d.Comps.Responses[strings.TrimPrefix(r.Ref, "#/components/responses/")])
	}
	s := r.Content["application/json"].Schema
	if s.Ref != "" {
		s = d.Comps.Schemas[strings.TrimPrefix(s.Ref, "#/components/schemas/")]
	}
	return s
}

func loadDocument(t *testing.T, f *fixture) *document {
	t.Helper()
	code, hd, body := f.call(t, http.MethodGet, admin.PathOpenAPI, nil, false)
	if code != http.StatusOK || hd.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %d %s", admin.PathOpenAPI, code, hd.Get("Content-Type"))
	}
	if !bytes.Equal(body, admin.OpenAPI()) {
		t.Error("the served document is not admin.OpenAPI()")
	}
	var doc document
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("the OpenAPI document is not JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q, want 3.x", doc.OpenAPI)
	}
	return &doc
}

// A call the walk makes, and the status it must get.
type probe struct {
	what        string
	method      string
	path        string
	body        []byte
	token       bool
	want        int
	errorNaming string // a 4xx answer's error must contain it
	freshIDs    bool   // replace the body's ids with a dead letter's made just before
}

// Every route the OpenAPI document names answers as it says: a valid
// request gets 200 with the documented fields; without the token 401;
// each documented 400 case (an unknown parameter or field, a value its
// schema refuses) gets 400 naming the parameter; an unknown endpoint or
// event 404; a body past the limit 413; another method on the path 405
// with Allow listing exactly the documented methods. No answer holds a
// configured secret.
func TestOpenAPIRoutesAnswerAsDocumented(t *testing.T) {
	f := newFixture(t)
	doc := loadDocument(t, f)
	if len(doc.Paths) < 8 {
		t.Fatalf("the document names %d paths", len(doc.Paths))
	}
	pathValue := map[string]string{"name": bus.DefaultEndpoint, "id": f.eventID}
	// Replays and purges change the bus: the reads first, the purge last.
	type route struct{ path, method string }
	var routes []route
	for p, ops := range doc.Paths {
		for m := range ops {
			routes = append(routes, route{p, m})
		}
	}
	order := map[string]int{"get": 0, "post": 1, "delete": 2}
	sort.Slice(routes, func(i, j int) bool {
		if order[routes[i].method] != order[routes[j].method] {
			return order[routes[i].method] < order[routes[j].method]
		}
		return routes[i].path < routes[j].path
	})
	for _, rt := range routes {
		{
			p, m := rt.path, rt.method
			op := doc.Paths[p][m]
			method := strings.ToUpper(m)
			t.Run(method+" "+p, func(t *testing.T) {
				var probes []probe
				build := func(values map[string]string, query url.Values) string {
					path := p
					for k, v := range values {
						path = strings.ReplaceAll(path, "{"+k+"}", url.PathEscape(v))
					}
					if len(query) > 0 {
						path += "?" + query.Encode()
					}
					return path
				}
				query := url.Values{}
				var queryParams []parameter
				for _, raw := range op.Parameters {
					prm := doc.param(raw)
					switch prm.In {
					case "path":
						if _, ok := pathValue[prm.Name]; !ok {
							t.Fatalf("path parameter %q: the test has no value for it", prm.Name)
						}
					case "query":
						queryParams = append(queryParams, prm)
						if prm.Example != nil && prm.Name != "event" {
							query.Set(prm.Name, fmt.Sprint(prm.Example))
						}
					}
				}
				var bodies [][]byte
				var bodySchema schema
				if op.RequestBody != nil {
					c, ok := op.RequestBody.Content["application/json"]
					if !ok {
						t.Fatal("requestBody without application/json")
					}
					bodySchema = c.Schema
					if c.Example != nil {
						bodies = append(bodies, mustJSON(t, c.Example))
					}
					var names []string
					for n := range c.Examples {
						names = append(names, n)
					}
					sort.Strings(names)
					for _, n := range names {
						bodies = append(bodies, mustJSON(t, c.Examples[n].Value))
					}
					if len(bodies) == 0 {
						t.Fatal("requestBody without an example")
					}
				} else {
					bodies = [][]byte{nil}
				}
				for i, body := range bodies {
					var valid map[string]any
					fresh := json.Unmarshal(body, &valid) == nil && valid["ids"] != nil
					probes = append(probes, probe{what: fmt.Sprintf("valid request %d", i+1), method: method, path: build(pathValue, query), body: body, token: true, want: http.StatusOK, freshIDs: fresh})
				}
				_, secured := op.Responses["401"]
				if secured {
					probes = append(probes, probe{what: "no token", method: method, path: build(pathValue, query), body: bodies[0], want: http.StatusUnauthorized})
				} else if op.Security == nil || len(*op.Security) != 0 {
					t.Error("no 401 documented, yet not marked security: []")
				}
				if _, ok := op.Responses["400"]; ok {
					if op.RequestBody != nil {
						probes = append(probes,
							probe{what: "unknown field", method: method, path: build(pathValue, query), body: []byte(`{"bogus": 1}`), token: true, want: 400, errorNaming: "bogus"},
							probe{what: "not JSON", method: method, path: build(pathValue, query), body: []byte(`{`), token: true, want: 400, errorNaming: "body"})
						for name, ps := range bodySchema.Properties {
							if bad, ok := badValue(ps); ok {
								var valid map[string]any
								_ = json.Unmarshal(bodies[0], &valid)
								valid[name] = bad
								probes = append(probes, probe{what: "bad " + name, method: method, path: build(pathValue, query), body: mustJSON(t, valid), token: true, want: 400, errorNaming: name})
							}
						}
					} else {
						q := url.Values{}
						for k, v := range query {
							q[k] = v
						}
						q.Set("bogus", "1")
						probes = append(probes, probe{what: "unknown parameter", method: method, path: build(pathValue, q), token: true, want: 400, errorNaming: "bogus"})
					}
					for _, prm := range queryParams {
						if bad, ok := badValue(prm.Schema); ok {
							q := url.Values{}
							for k, v := range query {
								q[k] = v
							}
							q.Set(prm.Name, fmt.Sprint(bad))
							probes = append(probes, probe{what: "bad " + prm.Name, method: method, path: build(pathValue, q), body: bodies[0], token: true, want: 400, errorNaming: prm.Name})
						}
					}
				}
				if _, ok := op.Responses["404"]; ok {
					unknown := map[string]string{"name": "no-such-endpoint", "id": uuid.NewString()}
					body := bodies[0]
					if !strings.Contains(p, "{") { // the endpoint is in the body
						var valid map[string]any
						_ = json.Unmarshal(body, &valid)
						valid["endpoint"] = "no-such-endpoint"
						body = mustJSON(t, valid)
					}
					probes = append(probes, probe{what: "unknown", method: method, path: build(unknown, query), body: body, token: true, want: 404, errorNaming: "no"})
				}
				if _, ok := op.Responses["413"]; ok {
					big := append([]byte(`{"since": "`), bytes.Repeat([]byte("x"), admin.DefaultMaxBodyBytes)...)
					probes = append(probes, probe{what: "body too large", method: method, path: build(pathValue, query), body: append(big, `"}`...), token: true, want: 413, errorNaming: "body"})
				}
				for _, pr := range probes {
					if pr.freshIDs { // the example's id is in no queue: one that is, made now
						var valid map[string]any
						_ = json.Unmarshal(pr.body, &valid)
						valid["ids"] = []string{f.poison(t)}
						pr.body = mustJSON(t, valid)
					}
					code, hd, body := f.call(t, pr.method, pr.path, pr.body, pr.token)
					if _, documented := op.Responses[fmt.Sprint(code)]; !documented {
						t.Errorf("%s: %s %s answered %d, which the document does not list: %s", pr.what, pr.method, pr.path, code, body)
						continue
					}
					if code != pr.want {
						t.Errorf("%s: %s %s answered %d, want %d: %s", pr.what, pr.method, pr.path, code, pr.want, body)
						continue
					}
					if ct := hd.Get("Content-Type"); ct != "application/json" {
						t.Errorf("%s: Content-Type %q", pr.what, ct)
					}
					var ans map[string]any
					if err := json.Unmarshal(body, &ans); err != nil {
						t.Errorf("%s: answer is not a JSON object: %v: %s", pr.what, err, body)
						continue
					}
					for _, req := range doc.responseSchema(t, op.Responses[fmt.Sprint(code)]).Required {
						if _, ok := ans[req]; !ok {
							t.Errorf("%s: answer lacks documented field %q: %s", pr.what, req, body)
						}
					}
					if pr.errorNaming != "" {
						if msg, _ := ans["error"].(string); !strings.Contains(msg, pr.errorNaming) {
							t.Errorf("%s: error %q does not name %q", pr.what, msg, pr.errorNaming)
						}
					}
				}
			})
		}
	}
	for p, ops := range doc.Paths {
		// Another method on the path: 405, Allow naming exactly the documented ones.
		t.Run("405 "+p, func(t *testing.T) {
			var want []string
			for m := range ops {
				want = append(want, strings.ToUpper(m))
			}
			for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodPut} {
				if slices.Contains(want, m) {
					continue
				}
				code, hd, body := f.call(t, m, strings.NewReplacer("{name}", "default", "{id}", f.eventID).Replace(p), nil, true)
				if code != http.StatusMethodNotAllowed {
					t.Errorf("%s %s: %d, want 405: %s", m, p, code, body)
					continue
				}
				allow := strings.Split(hd.Get("Allow"), ", ")
				slices.Sort(allow)
				slices.Sort(want)
				if !slices.Equal(allow, want) && !(slices.Contains(allow, http.MethodHead) && slices.Equal(slices.DeleteFunc(allow, func(s string) bool { return s == http.MethodHead }), want)) {
					t.Errorf("%s %s: Allow %v, the document lists %v", m, p, allow, want)
				}
			}
		})
	}
	for _, s := range secrets {
		if strings.Contains(f.answers.String(), s) {
			t.Errorf("an answer holds the configured secret %q", s)
		}
	}
}

// badValue is a value schema s refuses, if it constrains its values.
func badValue(s schema) (any, bool) {
	switch {
	case s.Format == "date-time":
		return "yesterday", true
	case len(s.Enum) > 0:
		return "bogus", true
	case s.Type == "integer" && s.Minimum != nil:
		return *s.Minimum - 1, true
	case s.Type == "array":
		return []string{}, true
	case s.MinLength != nil && *s.MinLength > 0:
		return "", true
	}
	return nil, false
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every route the handler serves is in the document: a path under /api/
// it does not name answers 404.
func TestUnknownRoutes(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/api/", "/api/nope", "/api/endpoints/default", "/api/endpoints/default/explode", "/api/events", "/api/dlq/replay/x"} {
		code, hd, body := f.call(t, http.MethodGet, p, nil, true)
		if code != http.StatusNotFound || hd.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
	code, hd, _ := f.call(t, http.MethodGet, "/api/nope", nil, false)
	if code != http.StatusUnauthorized || !strings.Contains(hd.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("GET /api/nope without the token: %d, want 401 (the API tells nothing to a stranger)", code)
	}
}

// The attempts of the failed event: one per try, with the receiver's
// status and the start of its answer; the filters and the cursor work.
func TestAttemptsAndEvent(t *testing.T) {
	f := newFixture(t)
	code, _, body := f.call(t, http.MethodGet, "/api/events/"+url.PathEscape(f.eventID), nil, true)
	if code != http.StatusOK {
		t.Fatalf("GET event: %d %s", code, body)
	}
	var rec bus.EventRecord
	if err := json.Unmarshal(body, &rec); err != nil {
		t.Fatal(err)
	}
	var def, crm int
	for _, a := range rec.Attempts {
		switch a.Endpoint {
		case bus.DefaultEndpoint:
			def++
			if a.Succeeded || a.Status != http.StatusServiceUnavailable || !strings.Contains(a.Response, "down for maintenance") {
				t.Errorf("default endpoint's attempt %+v, want failed 503 with the answer", a)
			}
		case "crm":
			crm++
			if !a.Succeeded || a.Status != http.StatusOK {
				t.Errorf("crm's attempt %+v, want 200", a)
			}
		}
	}
	if def != 2 || crm != 1 {
		t.Errorf("event attempts: %d on default, %d on crm; want 2 and 1: %s", def, crm, body)
	}

	code, _, body = f.call(t, http.MethodGet, "/api/attempts?status=failed&endpoint=default", nil, true)
	var page bus.AttemptPage
	if err := json.Unmarshal(body, &page); code != http.StatusOK || err != nil {
		t.Fatalf("GET attempts: %d %v %s", code, err, body)
	}
	if len(page.Attempts) != 2 || page.Attempts[0].Number != 2 || page.Attempts[1].Number != 1 {
		t.Errorf("failed attempts, newest first: %s", body)
	}
	// One at a time: the cursor leads to the older one, then ends.
	var numbers []int
	next := ""
	for range 5 {
		q := url.Values{"limit": {"1"}, "endpoint": {"default"}}
		if next != "" {
			q.Set("cursor", next)
		}
		code, _, body := f.call(t, http.MethodGet, "/api/attempts?"+q.Encode(), nil, true)
		var page bus.AttemptPage
		if err := json.Unmarshal(body, &page); code != http.StatusOK || err != nil {
			t.Fatalf("GET attempts: %d %v %s", code, err, body)
		}
		for _, a := range page.Attempts {
			numbers = append(numbers, a.Number)
		}
		if next = page.Next; next == "" {
			break
		}
	}
	if !slices.Equal(numbers, []int{2, 1}) {
		t.Errorf("paging one by one gave attempts %v, want [2 1]", numbers)
	}
	if code, _, body := f.call(t, http.MethodGet, "/api/attempts?cursor=not-a-cursor", nil, true); code != http.StatusBadRequest || !strings.Contains(string(body), "cursor") {
		t.Errorf("GET attempts with a cursor the API did not give: %d %s, want 400 naming cursor", code, body)
	}
	if code, _, body := f.call(t, http.MethodGet, "/api/events/"+uuid.NewString(), nil, true); code != http.StatusNotFound {
		t.Errorf("GET unknown event: %d %s", code, body)
	}
	if regexp.MustCompile(`(?i)authorization|webhook-signature`).Match(f.answers.Bytes()) {
		t.Error("an answer holds a request header")
	}
}

// Recover sends the dead letter again to its endpoint only, keeping its
// id; it is then delivered once.
func TestRecover(t *testing.T) {
	f := newFixture(t)
	f.failing.Store(false)
	before := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	code, _, body := f.call(t, http.MethodPost, "/api/endpoints/default/recover", mustJSON(t, map[string]string{"since": before}), true)
	if code != http.StatusOK || strings.TrimSpace(string(body)) != `{"recovered":1}` {
		t.Fatalf("recover: %d %s, want 1 recovered", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, body := f.call(t, http.MethodGet, "/api/attempts?status=succeeded&endpoint=default&event="+url.QueryEscape(f.eventID), nil, true)
		var page bus.AttemptPage
		_ = json.Unmarshal(body, &page)
		if code == http.StatusOK && len(page.Attempts) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recovered event was not delivered in 10s: %s", body)
		}
		time.Sleep(10 * time.Millisecond) // polling the log: nothing to wait on
	}
}
