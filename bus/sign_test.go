package bus_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/verify"
)

// Every attempt is signed afresh: same webhook-id, its own timestamp and
// signature, verifiable by a receiver holding either rotating secret.
func TestDeliveriesAreSigned(t *testing.T) {
	const oldSecret, newSecret = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0", "plain-new-secret"
	f := start(t, bus.Config{Secret: oldSecret + ", " + newSecret, RetryDelay: 1100 * time.Millisecond}, func(_ http.ResponseWriter, _ *http.Request, n int) int {
		if n == 1 {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	if err := f.bus.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: "m"})); err != nil {
		t.Fatal(err)
	}
	if err := f.rcv.WaitFor(2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	reqs := f.rcv.Requests()
	for _, secret := range []string{oldSecret, newSecret} {
		v, err := verify.New(secret)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range reqs {
			if err := v.Verify(r.Header, r.Body); err != nil {
				t.Errorf("attempt %d does not verify with one of the rotating secrets: %v", i+1, err)
			}
			if n := len(strings.Fields(r.Header.Get(verify.HeaderSignature))); n != 2 {
				t.Errorf("attempt %d carries %d signatures, want one per secret", i+1, n)
			}
		}
	}
	if reqs[0].Header.Get(verify.HeaderID) != reqs[1].Header.Get(verify.HeaderID) {
		t.Error("webhook-id changed between attempts")
	}
	if reqs[0].Header.Get(verify.HeaderTimestamp) == reqs[1].Header.Get(verify.HeaderTimestamp) ||
		reqs[0].Header.Get(verify.HeaderSignature) == reqs[1].Header.Get(verify.HeaderSignature) {
		t.Error("the retry reused the first attempt's timestamp and signature")
	}
	if got := reqs[0].Header.Get("X-Webhook-Secret"); got != oldSecret {
		t.Errorf("X-Webhook-Secret = %q, want the first secret as written", got)
	}
}

func TestLegacySecretHeaderCanBeSwitchedOff(t *testing.T) {
	f := start(t, bus.Config{Secret: "s3cret", DisableLegacySecretHeader: true}, nil)
	if err := f.bus.Emit(context.Background(), event.NewMemoryAdded("u", event.Memory{ID: "m"})); err != nil {
		t.Fatal(err)
	}
	if err := f.rcv.WaitFor(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r := f.rcv.Requests()[0]
	if r.Header.Get("X-Webhook-Secret") != "" || r.Header.Get(verify.HeaderSignature) == "" {
		t.Errorf("headers = %v: want a signature and no X-Webhook-Secret", r.Header)
	}
}

func TestBadSecretIsAConfigError(t *testing.T) {
	_, err := bus.ConfigFromLookup(func(k string) (string, bool) {
		if k == "MEM0_WEBHOOK_SECRET" {
			return "whsec_***not-base64***", true
		}
		return "", false
	})
	if err == nil || !strings.Contains(err.Error(), "MEM0_WEBHOOK_SECRET") || strings.Contains(err.Error(), "not-base64") {
		t.Fatalf("err = %v: want an error naming the variable without its value", err)
	}
}
