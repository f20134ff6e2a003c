package verify_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/verify"
)

// FuzzParseSignatures: any header value parses without panicking; every
// signature returned is 32 bytes whose canonical "v1,<base64>" entry is in
// the header; and the entries Sign makes always parse back.
func FuzzParseSignatures(f *testing.F) {
	for _, seed := range []string{
		kaSig, kaSig + " " + refBadSig, "v1,abc v2,def", "v1a," + kaSig[3:] + " " + kaSig,
		",,, v1, v1,= ,", "v1," + kaSig + " " + kaSig + ",x", "\tv1,\x00\xff " + kaSig[:20], strings.TrimSuffix(kaSig, "E=") + "F=",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		entries := strings.Fields(header)
		for _, sig := range verify.ParseSignatures(header) {
			if len(sig) != 32 {
				t.Fatalf("signature of %d bytes from %q", len(sig), header)
			}
			entry := "v1," + base64.StdEncoding.EncodeToString(sig)
			found := false
			for _, e := range entries {
				found = found || e == entry
			}
			if !found {
				t.Fatalf("signature %s is not spelled so in %q", entry, header)
			}
		}
		// Sign's own entries, around whatever the header holds, parse.
		signed := verify.Sign(mustSecrets(t, kaSecret+" "+whsec("2")), header, kaAt, []byte(header))
		if n := len(verify.ParseSignatures(signed + " " + header)); n < 2 {
			t.Fatalf("%d signatures parsed from Sign's two and %q", n, header)
		}
	})
}

// FuzzVerify: arbitrary headers and bodies never panic, and a refusal
// always wraps exactly one of the documented errors; whatever Sign makes
// for an id and body always verifies, with either of two rotating
// secrets, and stops verifying once the body changes.
func FuzzVerify(f *testing.F) {
	f.Add(kaID, "1614265330", kaSig, []byte(kaBody), int64(0))
	f.Add("msg_1", "1614265330", "v1a,x v2,y "+kaSig, []byte{}, int64(60))
	f.Add("", "", "", []byte(nil), int64(-1))
	f.Add("\x00", "+1", "v1,", []byte{0xff}, int64(-301))
	f.Add("id with spaces . dots", "99999999999999999999", " v1,"+refBadSig[3:]+"  ", []byte(kaBody+"\n"), int64(1<<40))
	sentinels := []error{verify.ErrMissingHeader, verify.ErrInvalidHeader, verify.ErrTimestampTooOld, verify.ErrTimestampTooNew, verify.ErrNoMatchingSignature}
	v, err := verify.New(whsec("old"), kaSecret)
	if err != nil {
		f.Fatal(err)
	}
	v.Now = func() time.Time { return kaAt }
	secs := mustSecrets(f, kaSecret)
	f.Fuzz(func(t *testing.T, id, stamp, sig string, body []byte, skew int64) {
		h := http.Header{}
		h.Set(verify.HeaderID, id)
		h.Set(verify.HeaderTimestamp, stamp)
		h.Set(verify.HeaderSignature, sig)
		if err := v.Verify(h, body); err != nil {
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("Verify = %v: wraps %d of the documented errors", err, n)
			}
		}

		if id == "" {
			return // a missing id never verifies
		}
		at := kaAt.Add(time.Duration(skew%301) * time.Second) // within the tolerance
		h.Set(verify.HeaderTimestamp, itoa(at.Unix()))
		h.Set(verify.HeaderSignature, verify.Sign(secs, id, at, body))
		if err := v.Verify(h, body); err != nil {
			t.Fatalf("a fresh signature fails: %v", err)
		}
		h.Set(verify.HeaderSignature, sig+" "+verify.Sign(secs, id, at, body))
		if err := v.Verify(h, body); err != nil {
			t.Fatalf("a fresh signature after %q fails: %v", sig, err)
		}
		changed := append(append([]byte(nil), body...), 'x')
		if err := v.Verify(h, changed); !errors.Is(err, verify.ErrNoMatchingSignature) {
			t.Fatalf("a changed body verifies: %v", err)
		}
	})
}

// FuzzParseSecrets: any configured string parses or fails with
// ErrInvalidSecret, never panics, and every secret parsed signs so that a
// Verifier over the same string accepts it.
func FuzzParseSecrets(f *testing.F) {
	for _, seed := range []string{kaSecret, "a, b", "", " , ", "whsec_", "whsec_!!", "whsec_YQ==,raw", "whsec_YQ"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		secs, err := verify.ParseSecrets(s)
		if err != nil {
			if !errors.Is(err, verify.ErrInvalidSecret) {
				t.Fatalf("ParseSecrets = %v, not ErrInvalidSecret", err)
			}
			return
		}
		v, err := verify.NewFromSecrets(secs)
		if err != nil {
			t.Fatal(err)
		}
		v.Now = func() time.Time { return kaAt }
		for _, sec := range secs {
			sig := verify.Sign([]verify.Secret{sec}, kaID, kaAt, []byte(kaBody))
			if err := v.Verify(headers(kaID, kaStamp, sig), []byte(kaBody)); err != nil {
				t.Fatalf("Verify = %v", err)
			}
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
