package main_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/internal/receiver"
)

// TestServeDashboard: serve mounts the dashboard at /ui/ beside the API
// when MEMHOOK_ADMIN_TOKEN is set, and says it is off otherwise. (The
// dashboard's pages are tested in package admin and in tests/browser.)
func TestServeDashboard(t *testing.T) {
	rcv, err := receiver.Start(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rcv.Close() })
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		name  string
		token string
		path  string
		code  int
		want  string // in the body, or the Location
	}{
		{"off without a token", "", "/ui/", http.StatusServiceUnavailable, "set MEMHOOK_ADMIN_TOKEN"},
		{"login first", "dash-board-T0ken", "/ui/", http.StatusSeeOther, "/ui/login?next=%2Fui%2F"},
		{"the bare path", "dash-board-T0ken", "/ui", http.StatusTemporaryRedirect, "/ui/"},
		{"the login form", "dash-board-T0ken", "/ui/login", http.StatusOK, `name="token"`},
		{"the API beside it", "dash-board-T0ken", "/healthz", http.StatusOK, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServe(t, serveEnv(rcv, "MEMHOOK_ADMIN_TOKEN", tc.token))
			code, hd, b, err := do(noRedirect, http.MethodGet, s.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b) + hd.Get("Location"); code != tc.code || !strings.Contains(got, tc.want) {
				t.Fatalf("GET %s: %d %q, want %d with %q", tc.path, code, got, tc.code, tc.want)
			}
			dashboard := "dashboard=/ui/"
			if tc.token == "" {
				dashboard = "dashboard=off"
			}
			s.waitLog(5*time.Second, "memhook: serving", dashboard)
		})
	}
}
