package verify_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/memhook/memhook/verify"
)

// FuzzParseSignatures: any header value parses without panicking, and
// every signature returned is a SHA-256 sized v1 entry.
func FuzzParseSignatures(f *testing.F) {
	f.Add(kaSig)
	f.Add("v1,abc v2,def")
	f.Add("v1a," + kaSig[3:] + " " + kaSig)
	f.Add(",,, v1, v1,=")
	f.Fuzz(func(t *testing.T, header string) {
		for _, sig := range verify.ParseSignatures(header) {
			if len(sig) != 32 {
				t.Fatalf("signature of %d bytes from %q", len(sig), header)
			}
		}
	})
}

// FuzzVerify: arbitrary headers and bodies never panic; whatever Sign
// makes for them always verifies.
func FuzzVerify(f *testing.F) {
	f.Add("msg_1", int64(kaStamp), kaSig, []byte(kaBody))
	f.Add("", int64(0), "v1,", []byte{})
	f.Fuzz(func(t *testing.T, id string, ts int64, sig string, body []byte) {
		now := time.Unix(kaStamp, 0)
		v, err := verify.New(kaSecret)
		if err != nil {
			t.Fatal(err)
		}
		v.Now = func() time.Time { return now }
		h := http.Header{}
		h.Set(verify.HeaderID, id)
		h.Set(verify.HeaderTimestamp, itoa(ts))
		h.Set(verify.HeaderSignature, sig)
		_ = v.Verify(h, body)

		if id == "" {
			return // a missing id never verifies
		}
		good := verify.Sign(mustSecrets(t, kaSecret), id, now, body)
		h.Set(verify.HeaderTimestamp, itoa(now.Unix()))
		h.Set(verify.HeaderSignature, good)
		if err := v.Verify(h, body); err != nil {
			t.Fatalf("a fresh signature fails: %v", err)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
