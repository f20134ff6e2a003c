package verify_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/verify"
)

// Signatures from the reference libraries' tests: one that matches
// nothing, and the known answer with one data bit changed.
const (
	refBadSig     = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
	refFlippedSig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
)

func TestVerify(t *testing.T) {
	otherSig := verify.Sign(mustSecrets(t, whsec("another key")), kaID, kaAt, []byte(kaBody))
	without := func(name string) http.Header {
		h := headers(kaID, kaStamp, kaSig)
		h.Del(name)
		return h
	}
	withStamp := func(stamp string) http.Header {
		h := headers(kaID, kaStamp, kaSig)
		h.Set(verify.HeaderTimestamp, stamp)
		return h
	}
	manySecrets := []string{whsec("1"), whsec("2"), whsec("3"), whsec("4"), whsec("5"), kaSecret}
	tolerance := func(d time.Duration, now time.Time) *verify.Verifier {
		v := verifierAt(t, now, kaSecret)
		v.Tolerance = d
		return v
	}

	tests := []struct {
		name    string
		v       *verify.Verifier
		h       http.Header
		body    string
		wantErr error
	}{
		{"known answer", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, kaSig), kaBody, nil},

		{"missing webhook-id", verifierAt(t, kaAt, kaSecret), without(verify.HeaderID), kaBody, verify.ErrMissingHeader},
		{"missing webhook-timestamp", verifierAt(t, kaAt, kaSecret), without(verify.HeaderTimestamp), kaBody, verify.ErrMissingHeader},
		{"missing webhook-signature", verifierAt(t, kaAt, kaSecret), without(verify.HeaderSignature), kaBody, verify.ErrMissingHeader},
		{"no headers at all", verifierAt(t, kaAt, kaSecret), http.Header{}, kaBody, verify.ErrMissingHeader},

		{"timestamp a word", verifierAt(t, kaAt, kaSecret), withStamp("yesterday"), kaBody, verify.ErrInvalidHeader},
		{"timestamp fractional", verifierAt(t, kaAt, kaSecret), withStamp("1614265330.5"), kaBody, verify.ErrInvalidHeader},
		{"timestamp in milliseconds is too new", verifierAt(t, kaAt, kaSecret), withStamp("1614265330000"), kaBody, verify.ErrTimestampTooNew},
		{"timestamp negative", verifierAt(t, kaAt, kaSecret), withStamp("-1614265330"), kaBody, verify.ErrInvalidHeader},
		{"timestamp with plus sign", verifierAt(t, kaAt, kaSecret), withStamp("+1614265330"), kaBody, verify.ErrInvalidHeader},
		{"timestamp with space", verifierAt(t, kaAt, kaSecret), withStamp(" 1614265330"), kaBody, verify.ErrInvalidHeader},
		{"timestamp beyond int64", verifierAt(t, kaAt, kaSecret), withStamp("99999999999999999999"), kaBody, verify.ErrInvalidHeader},

		{"exactly tolerance old", verifierAt(t, kaAt.Add(5*time.Minute), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"a second too old", verifierAt(t, kaAt.Add(5*time.Minute+time.Second), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrTimestampTooOld},
		{"years old", verifierAt(t, kaAt.AddDate(5, 0, 0), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrTimestampTooOld},
		{"timestamp zero", verifierAt(t, kaAt, kaSecret), withStamp("0"), kaBody, verify.ErrTimestampTooOld},
		{"exactly tolerance ahead", verifierAt(t, kaAt.Add(-5*time.Minute), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"a second too new", verifierAt(t, kaAt.Add(-5*time.Minute-time.Second), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrTimestampTooNew},
		{"timestamp at int64 max", verifierAt(t, kaAt, kaSecret), withStamp("9223372036854775807"), kaBody, verify.ErrTimestampTooNew},
		{"custom tolerance, inside", tolerance(time.Hour, kaAt.Add(59*time.Minute)), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"custom tolerance, too old", tolerance(time.Minute, kaAt.Add(61*time.Second)), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrTimestampTooOld},
		{"custom tolerance, too new", tolerance(time.Minute, kaAt.Add(-61*time.Second)), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrTimestampTooNew},
		{"negative tolerance means the default", tolerance(-1, kaAt.Add(4*time.Minute)), headers(kaID, kaStamp, kaSig), kaBody, nil},

		{"tampered body", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, kaSig), `{"test": 2432232315}`, verify.ErrNoMatchingSignature},
		{"body with a trailing newline", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, kaSig), kaBody + "\n", verify.ErrNoMatchingSignature},
		{"empty body", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, kaSig), "", verify.ErrNoMatchingSignature},
		{"tampered id", verifierAt(t, kaAt, kaSecret), headers("msg_other", kaStamp, kaSig), kaBody, verify.ErrNoMatchingSignature},
		{"tampered timestamp", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp+1, kaSig), kaBody, verify.ErrNoMatchingSignature},
		{"timestamp with a leading zero is signed as sent", verifierAt(t, kaAt, kaSecret), withStamp("01614265330"), kaBody, verify.ErrNoMatchingSignature},
		{"wrong secret", verifierAt(t, kaAt, whsec("wrong")), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrNoMatchingSignature},
		{"reference libraries' bad signature", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, refBadSig), kaBody, verify.ErrNoMatchingSignature},
		{"one data bit flipped", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, refFlippedSig), kaBody, verify.ErrNoMatchingSignature},
		{"non-canonical base64 (padding bits set)", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, strings.TrimSuffix(kaSig, "E=")+"F="), kaBody, verify.ErrNoMatchingSignature},
		{"unpadded base64", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, strings.TrimSuffix(kaSig, "=")), kaBody, verify.ErrNoMatchingSignature},
		{"truncated signature", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, kaSig[:8]), kaBody, verify.ErrNoMatchingSignature},
		{"version and nothing", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, "v1,"), kaBody, verify.ErrNoMatchingSignature},
		{"signature without a version", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, kaSig[3:]), kaBody, verify.ErrNoMatchingSignature},
		{"garbage", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, "v1,dawfeoifkpqwoekfpqoekf"), kaBody, verify.ErrNoMatchingSignature},
		{"unknown versions only", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, "v1a,"+kaSig[3:]+" v2,"+kaSig[3:]+" V1,"+kaSig[3:]), kaBody, verify.ErrNoMatchingSignature},

		{"unknown version before a good one", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, "v1a,"+kaSig[3:]+" "+kaSig), kaBody, nil},
		{"several signatures, one valid (reference libraries' case)", verifierAt(t, kaAt, kaSecret),
			headers(kaID, kaStamp, strings.Join([]string{refBadSig, "v2," + refBadSig[3:], kaSig, refBadSig}, " ")), kaBody, nil},
		{"several signatures, last valid", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, otherSig+" "+kaSig), kaBody, nil},
		{"separated by several spaces and a tab", verifierAt(t, kaAt, kaSecret), headers(kaID, kaStamp, otherSig+"  \t"+kaSig+" "), kaBody, nil},
		{"rotation: only the second secret matches", verifierAt(t, kaAt, whsec("old"), kaSecret), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"rotation: only the first secret matches", verifierAt(t, kaAt, kaSecret, whsec("new")), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"rotation: two signatures, the verifier holds the second's secret", verifierAt(t, kaAt, kaSecret),
			headers(kaID, kaStamp, verify.Sign(mustSecrets(t, whsec("new")+" "+kaSecret), kaID, kaAt, []byte(kaBody))), kaBody, nil},
		{"many secrets, the last matches", verifierAt(t, kaAt, manySecrets...), headers(kaID, kaStamp, kaSig), kaBody, nil},
		{"many secrets, none matches", verifierAt(t, kaAt, manySecrets[:5]...), headers(kaID, kaStamp, kaSig), kaBody, verify.ErrNoMatchingSignature},
		{"zero Verifier refuses", &verify.Verifier{Now: func() time.Time { return kaAt }}, headers(kaID, kaStamp, kaSig), kaBody, verify.ErrNoMatchingSignature},
	}
	sentinels := []error{verify.ErrMissingHeader, verify.ErrInvalidHeader, verify.ErrTimestampTooOld, verify.ErrTimestampTooNew, verify.ErrNoMatchingSignature}
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
			for _, s := range sentinels {
				if s != tt.wantErr && errors.Is(err, s) {
					t.Errorf("Verify = %v, also matches %v", err, s)
				}
			}
			for _, secret := range []string{"MfKQ9r8", kaSig[3:13]} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error reveals a secret or the expected signature: %v", err)
				}
			}
		})
	}
}

// The error says which check failed, so an operator can act on it.
func TestVerifyErrorText(t *testing.T) {
	v := verifierAt(t, kaAt.Add(10*time.Minute), kaSecret)
	tests := []struct {
		name string
		h    http.Header
		want string
	}{
		{"missing header named", headers("", kaStamp, kaSig), "verify: missing header: webhook-id"},
		{"age and tolerance", headers(kaID, kaStamp, kaSig), "verify: timestamp too old: 10m0s old, tolerance 5m0s"},
		{"no v1 entry", headers(kaID, kaStamp+600, "v2,abc"), "verify: no matching signature: no well-formed v1 signature in webhook-signature"},
		{"counts", headers(kaID, kaStamp+600, kaSig+" "+refBadSig), "verify: no matching signature: 2 v1 signature(s) checked against 1 secret(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := v.Verify(tt.h, []byte(kaBody)); err == nil || err.Error() != tt.want {
				t.Fatalf("Verify = %v, want %s", err, tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		wantErr string
	}{
		{"one", []string{kaSecret}, ""},
		{"two", []string{kaSecret, "raw"}, ""},
		{"none", nil, "none given"},
		{"an empty one", []string{kaSecret, ""}, "#2: empty"},
		{"a bad one", []string{"whsec_!!bad-base64"}, "#1: whsec_… is not standard base64"},
		{"several in one string is one bad whsec_ secret", []string{kaSecret + " " + kaSecret}, "#1: whsec_… is not standard base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := verify.New(tt.secrets...)
			if tt.wantErr == "" {
				if err != nil || v == nil {
					t.Fatalf("New = %v, %v", v, err)
				}
				return
			}
			if !errors.Is(err, verify.ErrInvalidSecret) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New = %v, want ErrInvalidSecret saying %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "bad-base64") || strings.Contains(err.Error(), "MfKQ") {
				t.Errorf("error echoes the secret: %v", err)
			}
		})
	}
}

func TestNewFromSecrets(t *testing.T) {
	secs := mustSecrets(t, whsec("old")+" "+kaSecret)
	v, err := verify.NewFromSecrets(secs)
	if err != nil {
		t.Fatal(err)
	}
	v.Now = func() time.Time { return kaAt }
	secs[1] = secs[0] // the Verifier keeps its own copy
	if err := v.Verify(headers(kaID, kaStamp, kaSig), []byte(kaBody)); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if _, err := verify.NewFromSecrets(nil); !errors.Is(err, verify.ErrInvalidSecret) {
		t.Fatalf("NewFromSecrets(nil) = %v, want ErrInvalidSecret", err)
	}
}

// A zero Now is time.Now, a zero Tolerance the default.
func TestVerifierZeroFields(t *testing.T) {
	v, _ := verify.New(kaSecret)
	now := time.Now()
	body := []byte(kaBody)
	for _, tt := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"now", now, nil},
		{"4 minutes ago", now.Add(-4 * time.Minute), nil},
		{"6 minutes ago", now.Add(-6 * time.Minute), verify.ErrTimestampTooOld},
		{"6 minutes ahead", now.Add(6 * time.Minute), verify.ErrTimestampTooNew},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sig := verify.Sign(mustSecrets(t, kaSecret), kaID, tt.at, body)
			if err := v.Verify(headers(kaID, tt.at.Unix(), sig), body); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseSignatures(t *testing.T) {
	ka := verify.ParseSignatures(kaSig)
	if len(ka) != 1 {
		t.Fatalf("ParseSignatures(%s) = %d signatures", kaSig, len(ka))
	}
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"one", kaSig, 1},
		{"rotation", kaSig + " " + refBadSig, 2},
		{"unknown versions skipped", "v1a," + kaSig[3:] + " v2," + kaSig[3:] + " " + kaSig, 1},
		{"malformed skipped", "v1 v1, ,v1 v1,abc v1,!!!! " + kaSig[3:] + " " + kaSig + ",x", 0},
		{"non-canonical skipped", strings.TrimSuffix(kaSig, "E=") + "F=", 0},
		{"empty", "", 0},
		{"white space only", " \t ", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := verify.ParseSignatures(tt.header)
			if len(got) != tt.want {
				t.Fatalf("ParseSignatures = %d signatures, want %d", len(got), tt.want)
			}
			for _, sig := range got {
				if len(sig) != 32 {
					t.Errorf("signature of %d bytes", len(sig))
				}
			}
			if tt.want > 0 && string(got[0]) != string(ka[0]) {
				t.Errorf("first signature %x, want %x", got[0], ka[0])
			}
		})
	}
}
