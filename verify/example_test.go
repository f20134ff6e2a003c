package verify_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/memhook/memhook/verify"
)

// A receiver checks memhook's webhooks with the secret it shares with the
// sender (MEM0_WEBHOOK_SECRET): a handler behind Middleware sees only
// verified requests.
func Example() {
	v, err := verify.New("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
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
	send := func(body string) int {
		req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
		req.Header.Set(verify.HeaderID, "evt_1")
		req.Header.Set(verify.HeaderTimestamp, fmt.Sprint(now.Unix()))
		req.Header.Set(verify.HeaderSignature, signature)
		rec := httptest.NewRecorder()
		receiver.ServeHTTP(rec, req)
		return rec.Code
	}
	fmt.Println(send(body))
	// A body changed on the way is refused:
	fmt.Println(send(strings.Replace(body, "user123", "mallory", 1)))
	// Output:
	// verified evt_1: {"event":"memory_added","user_id":"user123","data":{}}
	// 204
	// 401
}
