package verify_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/memhook/memhook/verify"
)

// The Standard Webhooks known-answer vector (spec and reference libraries).
const (
	kaSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	kaID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	kaStamp  = 1614265330
	kaBody   = `{"test": 2432232314}`
	kaSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecrets(t testing.TB, s string) []verify.Secret {
	t.Helper()
	secs, err := verify.ParseSecrets(s)
	if err != nil {
		t.Fatal(err)
	}
	return secs
}

func TestSignKnownAnswer(t *testing.T) {
	got := verify.Sign(mustSecrets(t, kaSecret), kaID, time.Unix(kaStamp, 0), []byte(kaBody))
	if got != kaSig {
		t.Fatalf("Sign = %s, want %s", got, kaSig)
	}
}

func headers(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set(verify.HeaderID, id)
	h.Set(verify.HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(verify.HeaderSignature, sig)
	return h
}

func verifierAt(t testing.TB, now time.Time, secrets ...string) *verify.Verifier {
	t.Helper()
	v, err := verify.New(secrets...)
	if err != nil {
		t.Fatal(err)
	}
	v.Now = func() time.Time { return now }
	return v
}

func TestVerify(t *testing.T) {
	at := time.Unix(kaStamp, 0)
	other := verify.Sign(mustSecrets(t, "whsec_"+b64("another key")), kaID, at, []byte(kaBody))
	tests := []struct {
		name    string
		v       *verify.Verifier
		h       http.Header
		body    string
		wantErr error
	}{
		{"known answer", verifierAt(t, at, kaSecret), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"4 minutes late", verifierAt(t, at.Add(4*time.Minute), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"6 minutes late", verifierAt(t, at.Add(6*time.Minute), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrTimestampTooOld},
		{"6 minutes early", verifierAt(t, at.Add(-6*time.Minute), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrTimestampTooNew},
		{"tampered body", verifierAt(t, at, kaSecret), headers(kaID, kaStamp, kaSig), `{"test": 2432232315}`, verify.ErrNoMatchingSignature},
		{"other id", verifierAt(t, at, kaSecret), headers("msg_other", kaStamp, kaSig), kaBody, verify.ErrNoMatchingSignature},
		{"wrong secret", verifierAt(t, at, "whsec_"+b64("wrong")), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrNoMatchingSignature},
		{"unknown versions only", verifierAt(t, at, kaSecret), headers(kaID, kaStamp, "v1a,"+kaSig[3:]+" v2,"+kaSig[3:]), kaBody, verify.ErrNoMatchingSignature},
		{"unknown version before a good one", verifierAt(t, at, kaSecret), headers(kaID, kaStamp, "v2,abc "+kaSig), kaBody, nil},
		{"several signatures, second valid", verifierAt(t, at, kaSecret), headers(kaID, kaStamp, other+" "+kaSig), kaBody, nil},
		{"rotation: the second secret matches", verifierAt(t, at, "whsec_"+b64("old"), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"garbage signature", verifierAt(t, at, kaSecret), headers(kaID, kaStamp, "v1,!!!"), kaBody, verify.ErrNoMatchingSignature},
		{"missing id", verifierAt(t, at, kaSecret), headers("", kaStamp, kaSig), kaBody, verify.ErrMissingHeader},
		{"missing signature", verifierAt(t, at, kaSecret), headers(kaID, kaStamp, ""), kaBody, verify.ErrMissingHeader},
		{"missing timestamp", verifierAt(t, at, kaSecret), func() http.Header { h := headers(kaID, kaStamp, kaSig); h.Del(verify.HeaderTimestamp); return h }(), kaBody, verify.ErrMissingHeader},
		{"timestamp not a number", verifierAt(t, at, kaSecret), func() http.Header {
			h := headers(kaID, kaStamp, kaSig)
			h.Set(verify.HeaderTimestamp, "yesterday")
			return h
		}(), kaBody, verify.ErrInvalidHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.v.Verify(tt.h, []byte(tt.body))
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "MfKQ9r8") || strings.Contains(err.Error(), kaSig[3:]) {
				t.Errorf("error reveals a secret or the expected signature: %v", err)
			}
		})
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// memhook's signatures verify with the reference Go library, and the
// reference library's verify with ours, for several secrets.
func TestInteropWithReferenceLibrary(t *testing.T) {
	now := time.Now()
	body := []byte(`{"event":"memory_added","user_id":"u1","data":{"result":{"id":"m"}},"id":"evt_1"}`)
	for _, secret := range []string{kaSecret, "whsec_" + b64("a rather longer secret of 32 byte"), "whsec_" + b64("x")} {
		t.Run(strconv.Itoa(len(secret)), func(t *testing.T) {
			ref, err := standardwebhooks.NewWebhook(secret)
			if err != nil {
				t.Fatal(err)
			}
			ours := verify.Sign(mustSecrets(t, secret), "evt_1", now, body)
			if err := ref.Verify(body, headers("evt_1", now.Unix(), ours)); err != nil {
				t.Errorf("reference library refuses memhook's signature: %v", err)
			}
			theirs, err := ref.Sign("evt_1", now, body)
			if err != nil {
				t.Fatal(err)
			}
			if theirs != ours {
				t.Errorf("signatures differ: ours %s, reference %s", ours, theirs)
			}
			v, err := verify.New(secret)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Verify(headers("evt_1", now.Unix(), theirs), body); err != nil {
				t.Errorf("memhook refuses the reference library's signature: %v", err)
			}
		})
	}
	// Rotation: a header with two signatures verifies with either secret
	// alone, in the reference library too.
	oldS, newS := "whsec_"+b64("old secret"), "whsec_"+b64("new secret")
	both := verify.Sign(mustSecrets(t, oldS+" , "+newS), "evt_2", now, body)
	if n := len(strings.Fields(both)); n != 2 {
		t.Fatalf("rotation header %q has %d signatures, want 2", both, n)
	}
	for _, s := range []string{oldS, newS} {
		ref, _ := standardwebhooks.NewWebhook(s)
		if err := ref.Verify(body, headers("evt_2", now.Unix(), both)); err != nil {
			t.Errorf("reference library with one of the rotating secrets: %v", err)
		}
	}
}

func TestRawSecretIsUsedAsBytes(t *testing.T) {
	now := time.Now()
	sig := verify.Sign(mustSecrets(t, "my-signing-secret"), "id", now, []byte("b"))
	ref, _ := standardwebhooks.NewWebhookRaw([]byte("my-signing-secret"))
	if err := ref.Verify([]byte("b"), headers("id", now.Unix(), sig)); err != nil {
		t.Fatalf("a raw secret is not used as its bytes: %v", err)
	}
}

func TestParseSecrets(t *testing.T) {
	tests := []struct {
		in      string
		n       int
		wantErr string
	}{
		{kaSecret, 1, ""},
		{"a b", 2, ""},
		{"a,b, c", 3, ""},
		{"", 0, "no secret"},
		{" , ", 0, "no secret"},
		{"whsec_!!notbase64", 0, "not standard base64"},
		{"whsec_", 0, "holds no key"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			secs, err := verify.ParseSecrets(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSecrets(%q) = %v, want %q", tt.in, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "notbase64") {
					t.Errorf("error echoes the secret: %v", err)
				}
				return
			}
			if err != nil || len(secs) != tt.n {
				t.Fatalf("ParseSecrets(%q) = %d, %v; want %d", tt.in, len(secs), err, tt.n)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := mustSecrets(t, "top-secret-value")[0]
	outs := []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s), fmt.Sprint([]verify.Secret{s})}
	j, _ := json.Marshal(struct{ S verify.Secret }{s})
	outs = append(outs, string(j))
	for _, o := range outs {
		if strings.Contains(o, "top-secret") || strings.Contains(o, fmt.Sprintf("%x", "top-secret")) {
			t.Errorf("secret printed: %s", o)
		}
	}
}

func TestMiddleware(t *testing.T) {
	v := verifierAt(t, time.Unix(kaStamp, 0), kaSecret)
	var got []byte
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	send := func(h2 http.Header, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
		for k, vs := range h2 {
			req.Header[k] = vs
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := send(headers(kaID, kaStamp, kaSig), kaBody); rec.Code != http.StatusNoContent || string(got) != kaBody {
		t.Fatalf("valid request: %d, body seen by next %q", rec.Code, got)
	}
	rec := send(headers(kaID, kaStamp, kaSig), kaBody+" ")
	var e struct{ Error string }
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(e.Error, "no matching signature") {
		t.Fatalf("tampered: %d %s", rec.Code, rec.Body)
	}
	v.MaxBodyBytes = 10
	if rec := send(headers(kaID, kaStamp, kaSig), kaBody); rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("over the cap: %d", rec.Code)
	}
}

func BenchmarkSign(b *testing.B) {
	body := []byte(strings.Repeat("x", 400))
	for _, n := range []int{1, 2} {
		secs := mustSecrets(b, strings.TrimSpace(strings.Repeat(kaSecret+" ", n)))
		b.Run(strconv.Itoa(n)+"secret", func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			for range b.N {
				_ = verify.Sign(secs, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", now, body)
			}
		})
	}
}
