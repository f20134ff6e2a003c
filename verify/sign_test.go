package verify_test

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/memhook/memhook/verify"
)

// Vectors beyond the spec's were computed independently, with Python's hmac
// and base64 modules.
func TestSignKnownAnswer(t *testing.T) {
	tests := []struct {
		name    string
		secrets string
		id      string
		ts      time.Time
		body    string
		want    string
	}{
		{"spec vector", kaSecret, kaID, kaAt, kaBody, kaSig},
		{"sub-second time signs whole seconds", kaSecret, kaID, kaAt.Add(999 * time.Millisecond), kaBody, kaSig},
		{"another zone, same instant", kaSecret, kaID, kaAt.In(time.FixedZone("X", 5*3600)), kaBody, kaSig},
		{"two secrets, in order", kaSecret + ", whsec_bmV3IHNlY3JldA==", kaID, kaAt, kaBody,
			kaSig + " v1,siJxX6wnDvQIm6HKb0faQrHczo4sOWSlXmUlJFUOcqQ="},
		{"two secrets, the other order", "whsec_bmV3IHNlY3JldA== " + kaSecret, kaID, kaAt, kaBody,
			"v1,siJxX6wnDvQIm6HKb0faQrHczo4sOWSlXmUlJFUOcqQ= " + kaSig},
		{"the same secret twice", kaSecret + "," + kaSecret, kaID, kaAt, kaBody, kaSig + " " + kaSig},
		{"raw secret", "my-signing-secret", kaID, kaAt, kaBody, "v1,obyWf83dTeCfd8NttlppqbjpdXLSzH4ddXkk2WCAC8s="},
		{"non-ASCII id, empty body", kaSecret, "evt_ü€", time.Unix(1700000000, 0), "", "v1,PVdA3GD87h272lLZ8nK9TYsHxrvANNX/F1wG6PeixfU="},
		{"100-byte raw key, binary body", strings.Repeat("k", 100), "evt_1", time.Unix(1700000000, 0), "\x00\xff binary",
			"v1,8o2C6YE52un/YmyIcwAvFSMnQCRtxiUtT8IpMrCfygI="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := verify.Sign(mustSecrets(t, tt.secrets), tt.id, tt.ts, []byte(tt.body))
			if got != tt.want {
				t.Fatalf("Sign = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSignNoSecret(t *testing.T) {
	if got := verify.Sign(nil, kaID, kaAt, []byte(kaBody)); got != "" {
		t.Fatalf("Sign without secrets = %q, want empty", got)
	}
}

// A raw secret is used as its bytes: it signs like the whsec_ form of the
// same bytes, and like the reference library's raw-key constructor.
func TestSignRawSecret(t *testing.T) {
	raw := verify.Sign(mustSecrets(t, "my-signing-secret"), kaID, kaAt, []byte(kaBody))
	enc := verify.Sign(mustSecrets(t, whsec("my-signing-secret")), kaID, kaAt, []byte(kaBody))
	if raw != enc {
		t.Fatalf("raw %s, whsec_ form %s", raw, enc)
	}
	ref, err := standardwebhooks.NewWebhookRaw([]byte("my-signing-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if theirs, _ := ref.Sign(kaID, kaAt, []byte(kaBody)); theirs != raw {
		t.Fatalf("ours %s, reference raw-key %s", raw, theirs)
	}
}

// The zero Secret signs with an empty key rather than panicking on the
// delivery path, and no Verifier can be built on it.
func TestSignZeroSecret(t *testing.T) {
	got := verify.Sign([]verify.Secret{{}}, kaID, kaAt, []byte(kaBody))
	ref, _ := standardwebhooks.NewWebhookRaw(nil)
	if want, _ := ref.Sign(kaID, kaAt, []byte(kaBody)); got != want {
		t.Fatalf("zero Secret: %s, want the empty-key signature %s", got, want)
	}
	if _, err := verify.NewFromSecrets([]verify.Secret{{}}); !errors.Is(err, verify.ErrInvalidSecret) {
		t.Fatalf("NewFromSecrets(zero Secret) = %v, want ErrInvalidSecret", err)
	}
}

// Sign reuses pooled HMAC state; concurrent signers with shared secrets
// must still get the right answer (run with -race).
func TestSignConcurrent(t *testing.T) {
	secs := mustSecrets(t, kaSecret+" "+whsec("second"))
	want := verify.Sign(secs, kaID, kaAt, []byte(kaBody))
	if !strings.HasPrefix(want, kaSig+" ") {
		t.Fatalf("Sign = %s", want)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := kaID
				if i%2 == 1 { // vary the id so pooled scratch buffers get reused at other lengths
					id = strings.Repeat("x", g*i%300)
					_ = verify.Sign(secs, id, kaAt, []byte(kaBody))
					continue
				}
				if got := verify.Sign(secs, id, kaAt, []byte(kaBody)); got != want {
					t.Errorf("goroutine %d: Sign = %s, want %s", g, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Cross-check with the reference Go library (a test-only dependency):
// ours → theirs, theirs → ours, for several secrets and for rotation.
func TestInteropWithReferenceLibrary(t *testing.T) {
	now := time.Now()
	body := []byte(`{"event":"memory_added","user_id":"u1","data":{"result":{"id":"m"}},"id":"evt_1"}`)
	secrets := []struct{ name, secret string }{
		{"spec secret", kaSecret},
		{"32-byte key", whsec("a rather longer secret of 32 byt")},
		{"one-byte key", whsec("x")},
		{"64-byte key", whsec(strings.Repeat("k", 64))},
		{"key longer than a SHA-256 block", whsec(strings.Repeat("long", 40))},
	}
	for _, s := range secrets {
		t.Run(s.name, func(t *testing.T) {
			ref, err := standardwebhooks.NewWebhook(s.secret)
			if err != nil {
				t.Fatal(err)
			}
			ours := verify.Sign(mustSecrets(t, s.secret), "evt_1", now, body)
			if err := ref.Verify(body, headers("evt_1", now.Unix(), ours)); err != nil {
				t.Errorf("reference library refuses our signature: %v", err)
			}
			theirs, err := ref.Sign("evt_1", now, body)
			if err != nil {
				t.Fatal(err)
			}
			if theirs != ours {
				t.Errorf("signatures differ: ours %s, reference %s", ours, theirs)
			}
			v, err := verify.New(s.secret)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Verify(headers("evt_1", now.Unix(), theirs), body); err != nil {
				t.Errorf("we refuse the reference library's signature: %v", err)
			}
			// Both refuse the same tampering.
			tampered := append([]byte(nil), body...)
			tampered[len(tampered)-2] ^= 1
			if err := v.Verify(headers("evt_1", now.Unix(), theirs), tampered); !errors.Is(err, verify.ErrNoMatchingSignature) {
				t.Errorf("we accept a tampered body: %v", err)
			}
			if err := ref.Verify(tampered, headers("evt_1", now.Unix(), ours)); err == nil {
				t.Errorf("reference library accepts a tampered body")
			}
		})
	}

	t.Run("rotation", func(t *testing.T) {
		oldS, newS := whsec("old secret"), whsec("new secret")
		both := verify.Sign(mustSecrets(t, oldS+" , "+newS), "evt_2", now, body)
		if n := len(strings.Fields(both)); n != 2 {
			t.Fatalf("rotation header %q has %d signatures, want 2", both, n)
		}
		var theirs []string
		for _, s := range []string{oldS, newS} {
			ref, _ := standardwebhooks.NewWebhook(s)
			if err := ref.Verify(body, headers("evt_2", now.Unix(), both)); err != nil {
				t.Errorf("reference library holding one of the rotating secrets: %v", err)
			}
			sig, _ := ref.Sign("evt_2", now, body)
			theirs = append(theirs, sig)
		}
		if joined := strings.Join(theirs, " "); joined != both {
			t.Errorf("rotation header %s, reference signatures joined %s", both, joined)
		}
		for _, s := range []string{oldS, newS} {
			v, _ := verify.New(s)
			if err := v.Verify(headers("evt_2", now.Unix(), strings.Join(theirs, " ")), body); err != nil {
				t.Errorf("we refuse the reference library's rotation header: %v", err)
			}
		}
	})
}

// BenchmarkSign measures the signer middleware's per-attempt cost: a
// ~400-byte body, one secret and two (rotation).
func BenchmarkSign(b *testing.B) {
	body := []byte(`{"event":"memory_added","user_id":"user_2xQ7","data":{"results":[{"id":"0b0c4c8e-6f3f-4c1e-9d7e-1c2b3a4d5e6f","memory":"Prefers window seats on long flights and vegetarian meals","event":"ADD"}],"relations":[]},"id":"evt_6ba7b810-9dad-11d1-80b4-00c04fd430c8","created_at":"2026-01-01T12:00:00Z","metadata":{"source":"chat","session_id":"sess_91","agent":"travel-assistant","v":1},"pad":"xxxxxxxxxxxxxxxxxx"}`)
	for _, n := range []int{1, 2} {
		secs := mustSecrets(b, strings.TrimSpace(strings.Repeat(kaSecret+" ", n)))
		b.Run(strconv.Itoa(n)+"secret", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			now := time.Now()
			for b.Loop() {
				_ = verify.Sign(secs, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", now, body)
			}
		})
	}
}
