package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/handlers"
)

// adminClient calls the admin API of a running `memhook serve`: at
// MEMHOOK_ROUTER_URL (--router-url), with MEMHOOK_ADMIN_TOKEN as a
// bearer token when it is set.
type adminClient struct {
	base   string
	token  string
	client *http.Client
}

// maxAnswerBytes caps what the client reads of an answer.
const maxAnswerBytes = 8 << 20

// adminTimeout bounds each call.
const adminTimeout = 30 * time.Second

// newAdminClient reads MEMHOOK_ROUTER_URL (flag or variable; unset: the
// default) and MEMHOOK_ADMIN_TOKEN (variable only: a secret).
func newAdminClient(c *config, lookup func(string) (string, bool)) (*adminClient, error) {
	base, _ := c.Lookup("MEMHOOK_ROUTER_URL")
	if base == "" {
		base = bus.DefaultRouterURL
	}
	if err := handlers.ValidateURL(base); err != nil {
		return nil, fmt.Errorf("%s: %w", c.explain(errors.New("MEMHOOK_ROUTER_URL")), err)
	}
	token, _ := lookup("MEMHOOK_ADMIN_TOKEN")
	return &adminClient{base: strings.TrimSuffix(base, "/"), token: token, client: &http.Client{Timeout: adminTimeout}}, nil
}

// call sends one request (body, when not nil, as JSON) and returns the
// answer's body if it is 200; otherwise an error with the status and the
// API's error message. The URL in a transport error is redacted.
func (a *adminClient) call(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = handlers.RedactURL(ue.URL)
		}
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, err
	}
	shown := strings.SplitN(path, "?", 2)[0]
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s %s: %d: %s", method, shown, resp.StatusCode, e.Error)
		}
		return nil, fmt.Errorf("%s %s: %d", method, shown, resp.StatusCode)
	}
	return b, nil
}

// callJSON calls and decodes a 200 answer into v.
func (a *adminClient) callJSON(ctx context.Context, method, path string, body, v any) ([]byte, error) {
	b, err := a.call(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			return nil, fmt.Errorf("%s %s: the router's answer is not what the admin API gives: %w", method, strings.SplitN(path, "?", 2)[0], err)
		}
	}
	return b, nil
}

// parseSince reads a --since flag: an RFC 3339 time, or a Go duration
// meaning that long ago ("2h"), returned as RFC 3339 for the API.
func parseSince(v string, now time.Time) (string, error) {
	if v == "" {
		return "", nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.Format(time.RFC3339Nano), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d).UTC().Format(time.RFC3339Nano), nil
	}
	return "", fmt.Errorf("--since %q: give an RFC 3339 time (2024-01-15T14:00:00Z) or a duration ago (90m)", v)
}
