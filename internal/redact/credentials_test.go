package redact

import (
	"strings"
	"testing"
)

// Every token and every part of a secret list is replaced, also without
// its whsec_ prefix; short values and other text are left.
func TestCredentials(t *testing.T) {
	r := Credentials([]string{"tok-123456", "abc"}, []string{"whsec_AAAAAAAAAAAA, whsec_BBBBBBBBBBBB\twhsec_CCCCCCCCCCCC"})
	in := "t=tok-123456 s=whsec_AAAAAAAAAAAA raw=BBBBBBBBBBBB c=CCCCCCCCCCCC short=abc"
	got := r.Replace(in)
	for _, secret := range []string{"tok-123456", "AAAAAAAAAAAA", "BBBBBBBBBBBB", "CCCCCCCCCCCC"} {
		if strings.Contains(got, secret) {
			t.Errorf("%q survives in %q", secret, got)
		}
	}
	if !strings.Contains(got, "short=abc") {
		t.Errorf("a value under 6 bytes was replaced: %q", got)
	}
	if n := strings.Count(got, "REDACTED"); n != 4 {
		t.Errorf("%d replacements in %q, want 4", n, got)
	}
}
