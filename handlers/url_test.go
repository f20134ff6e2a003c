package handlers_test

import (
	"strings"
	"testing"

	"github.com/memhook/memhook/handlers"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://hooks.example.com/memory", "https://hooks.example.com/memory"},
		{"https://user:pa55@hooks.example.com/m", "https://REDACTED@hooks.example.com/m"},
		{"https://hooks.example.com/m?token=abc&x=1", "https://hooks.example.com/m?token=REDACTED&x=REDACTED"},
		{"https://hooks.example.com/m?s3cr3t", "https://hooks.example.com/m?REDACTED"},
		{"https://hooks.example.com/m?b=2&a=1", "https://hooks.example.com/m?b=REDACTED&a=REDACTED"},
		{"", ""},
		{"http://[::1", "REDACTED"},
		// A fragment is hidden whole.
		{"https://hooks.example.com/m#access_token=abc123", "https://hooks.example.com/m#REDACTED"},
		// Path segments that look like tokens; words and numbers stay.
		{"https://hooks.slack.com/services/T0001/B0001/XXXXSECRETxxxxsecret1234", "https://hooks.slack.com/services/T0001/B0001/REDACTED"},
		{"https://discord.com/api/webhooks/123456789012345678/AbCdEf-gHiJkL_mNoPqRsTuVwXyZ0123456789abcdefGHIJ", "https://discord.com/api/webhooks/123456789012345678/REDACTED"},
		{"https://webhook.site/0b8c5e8e-5d2c-4b6e-9f0a-1c2d3e4f5a6b", "https://webhook.site/REDACTED"},
		{"https://hooks.zapier.com/hooks/catch/1234567/abc12xyz/", "https://hooks.zapier.com/hooks/catch/1234567/REDACTED/"},
		{"https://example.com/api/v2/memory-notifications/2026-01-01", "https://example.com/api/v2/memory-notifications/2026-01-01"},
		// An escaped token is judged by what it decodes to.
		{"https://example.com/hook/s3cr3t%2Ftoken%2F42", "https://example.com/hook/REDACTED"},
		// Opaque URLs (no "//"): everything after the scheme may be credentials.
		{"http:user:PW-opaque-1@host/x", "http:REDACTED"},
		{"redis:PW-opaque-2@host:1", "redis:REDACTED"},
		{"mailto:someone@example.com", "mailto:REDACTED"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := handlers.RedactURL(tt.in); got != tt.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidateURL(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"https://hooks.example.com/memory", ""},
		{"http://127.0.0.1:3000/x", ""},
		{"ftp://hooks.example.com/x", "scheme must be http or https"},
		{"hooks.example.com/x", "scheme must be http or https"},
		{"http:///path", "host is missing"},
		{"https://u:secretpw@hooks.example.com/x?token=tok", ""},
		{"ftp://u:secretpw@h/x?token=tok", "scheme"},
		{"http:user:secretpw@host/x", `write http://host`},
		{"https:secretpw@host", `write https://host`},
		{"http:secretpw", `write http://host`},
		{"https://u:secretpw@/x?token=tok", "host is missing"},
		{"http://secretpw@:8080/x", "host is missing"},
		{"https://hooks.example.com/x#secretpw", ""},
		{"https://user:98765432#secretpw@hooks.example.com/x", "port out of range"},
		{"https://user:secret/pw@hooks.example.com/x", "percent-encoded"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := handlers.ValidateURL(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateURL(%q) = %v", tt.in, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ValidateURL(%q) = %v, want %q", tt.in, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secretpw") || strings.Contains(err.Error(), "=tok") {
				t.Errorf("error shows a credential: %v", err)
			}
		})
	}
}
