//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation
// counts only hold without it.

package verify_test

import (
	"testing"
	"time"

	"github.com/memhook/memhook/verify"
)

// Sign runs on every delivery attempt: it allocates only the header string.
func TestSignAllocs(t *testing.T) {
	body := make([]byte, 400)
	for _, secrets := range []string{kaSecret, kaSecret + " " + whsec("second")} {
		secs := mustSecrets(t, secrets)
		now := time.Now()
		allocs := testing.AllocsPerRun(100, func() {
			_ = verify.Sign(secs, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", now, body)
		})
		if allocs > 1 {
			t.Errorf("Sign with %d secret(s): %.1f allocations, want 1", len(secs), allocs)
		}
	}
}
