package bus_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
)

// New warns once, at start, while the seed's X-Webhook-Secret header
// sends the secret itself, at ERROR when plain http carries it off the
// machine, and never shows the secret.
func TestNewWarnsAboutTheLegacySecretHeader(t *testing.T) {
	const secret = "legacy-secret-5f3a9c2e"
	tests := []struct {
		name  string
		cfg   bus.Config
		level string // "" when nothing is logged
	}{
		{"plain http off the machine", bus.Config{WebhookURL: "http://hooks.example.com/memory"}, "ERROR"},
		{"plain http, user in the URL", bus.Config{WebhookURL: "http://user:pw-1b2c@203.0.113.7:8080/memory"}, "ERROR"},
		{"https", bus.Config{WebhookURL: "https://hooks.example.com/memory"}, "WARN"},
		{"plain http on loopback", bus.Config{WebhookURL: "http://127.0.0.1:9/memory"}, "WARN"},
		{"plain http to localhost", bus.Config{WebhookURL: "http://localhost:9/memory"}, "WARN"},
		{"plain http to ::1", bus.Config{WebhookURL: "http://[::1]:9/memory"}, "WARN"},
		{"several secrets", bus.Config{WebhookURL: "https://hooks.example.com/memory", Secret: secret + " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "WARN"},
		{"header disabled", bus.Config{WebhookURL: "http://hooks.example.com/memory", DisableLegacySecretHeader: true}, ""},
		{"no secret", bus.Config{WebhookURL: "http://hooks.example.com/memory", Secret: "-"}, ""},
		{"webhooks off", bus.Config{}, ""},
		{"transport http: the router sends webhooks", bus.Config{WebhookURL: "http://hooks.example.com/memory", Transport: bus.TransportHTTP}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			switch cfg.Secret {
			case "":
				cfg.Secret = secret
			case "-":
				cfg.Secret = ""
			}
			logs := &syncBuffer{}
			b, err := bus.New(cfg, bus.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Close(ctx); err != nil {
				t.Fatal(err)
			}
			out := logs.String()
			if strings.Contains(out, secret) || strings.Contains(out, "pw-1b2c") {
				t.Fatalf("the log shows the secret:\n%s", out)
			}
			var warnings []string
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "X-Webhook-Secret") {
					warnings = append(warnings, l)
				}
			}
			if tt.level == "" {
				if len(warnings) != 0 {
					t.Fatalf("want no warning, got:\n%s", strings.Join(warnings, "\n"))
				}
				return
			}
			if len(warnings) != 1 {
				t.Fatalf("want one warning, got %d:\n%s", len(warnings), out)
			}
			w := warnings[0]
			if !strings.Contains(w, "level="+tt.level) {
				t.Errorf("want level %s: %s", tt.level, w)
			}
			if !strings.Contains(w, "MEMHOOK_LEGACY_SECRET_HEADER=false") {
				t.Errorf("the warning does not say how to turn the header off: %s", w)
			}
			if tt.level == "ERROR" && !strings.Contains(w, "unencrypted") {
				t.Errorf("the warning does not say the secret travels unencrypted: %s", w)
			}
		})
	}
}
