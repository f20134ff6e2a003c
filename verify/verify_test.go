package verify_test

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/memhook/memhook/verify"
)

// The Standard Webhooks known-answer vector: the spec's, and the one every
// reference library (Go, JavaScript, Python, …) tests its Sign with.
const (
	kaSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	kaID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	kaStamp  = 1614265330
	kaBody   = `{"test": 2432232314}`
	kaSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// kaAt is the known-answer timestamp as a time.
var kaAt = time.Unix(kaStamp, 0)

func mustSecrets(t testing.TB, s string) []verify.Secret {
	t.Helper()
	secs, err := verify.ParseSecrets(s)
	if err != nil {
		t.Fatal(err)
	}
	return secs
}

// headers builds the three Standard Webhooks headers; an empty value
// leaves that header out.
func headers(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	if id != "" {
		h.Set(verify.HeaderID, id)
	}
	h.Set(verify.HeaderTimestamp, strconv.FormatInt(ts, 10))
	if sig != "" {
		h.Set(verify.HeaderSignature, sig)
	}
	return h
}

// verifierAt returns a Verifier over secrets whose clock stands at now.
func verifierAt(t testing.TB, now time.Time, secrets ...string) *verify.Verifier {
	t.Helper()
	v, err := verify.New(secrets...)
	if err != nil {
		t.Fatal(err)
	}
	v.Now = func() time.Time { return now }
	return v
}

// whsec returns a whsec_ secret holding key.
func whsec(key string) string { return "whsec_" + base64.StdEncoding.EncodeToString([]byte(key)) }

func TestHeaderNames(t *testing.T) {
	for got, want := range map[string]string{
		verify.HeaderID:        "webhook-id",
		verify.HeaderTimestamp: "webhook-timestamp",
		verify.HeaderSignature: "webhook-signature",
	} {
		if got != want {
			t.Errorf("header %q, want %q", got, want)
		}
	}
}
