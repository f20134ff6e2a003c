package verify_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/memhook/memhook/verify"
)

// A receiver checks memhook's webhooks with the secret it shares with the
// sender (MEM0_WEBHOOK_SECRET): the handler behind Middleware sees only
// verified requests, with the body intact.
func Example() {
	v, err := verify.New("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err) // a wiring mistake, at start-up
	}
	receiver := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("verified %s: %s\n", r.Header.Get(verify.HeaderID), body)
		w.WriteHeader(http.StatusNoContent)
	}))

	// What memhook sends:
	body := `{"event":"memory_added","user_id":"user123","data":{}}`
	secrets, _ := verify.ParseSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	now := time.Now()
	signature := verify.Sign(secrets, "evt_1", now, []byte(body))
	send := func(body string) {
		req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
		req.Header.Set(verify.HeaderID, "evt_1")
		req.Header.Set(verify.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
		req.Header.Set(verify.HeaderSignature, signature)
		rec := httptest.NewRecorder()
		receiver.ServeHTTP(rec, req)
		fmt.Println(strings.TrimSpace(strconv.Itoa(rec.Code) + " " + rec.Body.String()))
	}
	send(body)
	// A body changed on the way is refused:
	send(strings.Replace(body, "user123", "mallory", 1))
	// Output:
	// verified evt_1: {"event":"memory_added","user_id":"user123","data":{}}
	// 204
	// 401 {"error":"no matching signature: 1 v1 signature(s) checked against 1 secret(s)"}
}

// Verifying by hand, on the raw body bytes, with the Standard Webhooks
// known-answer vector and a clock set to its time.
func ExampleVerifier_Verify() {
	v, _ := verify.New("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	v.Now = func() time.Time { return time.Unix(1614265330, 0) }

	h := http.Header{}
	h.Set(verify.HeaderID, "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set(verify.HeaderTimestamp, "1614265330")
	h.Set(verify.HeaderSignature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	fmt.Println(v.Verify(h, []byte(`{"test": 2432232314}`)))

	v.Now = func() time.Time { return time.Unix(1614265330, 0).Add(time.Hour) }
	err := v.Verify(h, []byte(`{"test": 2432232314}`))
	fmt.Println(errors.Is(err, verify.ErrTimestampTooOld), err)
	// Output:
	// <nil>
	// true verify: timestamp too old: 1h0m0s old, tolerance 5m0s
}

// The sending side: one "v1," entry per secret, in order, while secrets
// rotate. (The second signature was computed independently, with Python's
// hmac module.)
func ExampleSign() {
	secrets, err := verify.ParseSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_bmV3IHNlY3JldA==")
	if err != nil {
		panic(err)
	}
	fmt.Println(verify.Sign(secrets, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`)))
	fmt.Println(secrets[0])
	// Output:
	// v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,siJxX6wnDvQIm6HKb0faQrHczo4sOWSlXmUlJFUOcqQ=
	// verify.Secret(REDACTED)
}
