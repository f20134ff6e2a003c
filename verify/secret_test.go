package verify_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/verify"
)

func TestParseSecret(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		signsAs string // a secret that must sign the same; "" when an error is wanted
		wantErr string
	}{
		{"whsec_ base64", kaSecret, kaSecret, ""},
		{"raw bytes", "plain-text secret", whsec("plain-text secret"), ""},
		{"base64 without the prefix is raw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", whsec("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), ""},
		{"surrounding space dropped", "  " + kaSecret + "\n", kaSecret, ""},
		{"prefix alone in the middle is raw", "xwhsec_abc", whsec("xwhsec_abc"), ""},
		{"empty", "", "", "empty"},
		{"only space", " \t\n", "", "empty"},
		{"bad base64 character", "whsec_MfKQ9r8GKYqrTwjUPD8I!PZIo2LaLaSw", "", "not standard base64"},
		{"bad base64 length", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "", "not standard base64"},
		{"URL alphabet", "whsec_-_-_", "", "not standard base64"},
		{"prefix and nothing", "whsec_", "", "holds no key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sec, err := verify.ParseSecret(tt.in)
			if tt.wantErr != "" {
				if !errors.Is(err, verify.ErrInvalidSecret) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSecret = %v, want ErrInvalidSecret saying %q", err, tt.wantErr)
				}
				if body := strings.TrimPrefix(strings.TrimSpace(tt.in), "whsec_"); len(body) > 3 && strings.Contains(err.Error(), body) {
					t.Errorf("error echoes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSecret = %v", err)
			}
			got := verify.Sign([]verify.Secret{sec}, kaID, kaAt, []byte(kaBody))
			if want := verify.Sign(mustSecrets(t, tt.signsAs), kaID, kaAt, []byte(kaBody)); got != want {
				t.Fatalf("signs as %s, want %s", got, want)
			}
		})
	}
}

func TestParseSecrets(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		n       int
		wantErr string
	}{
		{"one", kaSecret, 1, ""},
		{"space separated", "a b", 2, ""},
		{"comma separated", "a,b", 2, ""},
		{"mixed, with empty entries", " a,, b ,\tc\n", 3, ""},
		{"whsec_ and raw", kaSecret + "," + "raw", 2, ""},
		{"empty", "", 0, "none given"},
		{"only separators", " , ,", 0, "none given"},
		{"second one bad", "a whsec_!!not-base64", 0, "#2: whsec_… is not standard base64"},
		{"third one empty key", "a b whsec_", 0, "#3: whsec_… holds no key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secs, err := verify.ParseSecrets(tt.in)
			if tt.wantErr != "" {
				if !errors.Is(err, verify.ErrInvalidSecret) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSecrets = %v, want ErrInvalidSecret saying %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "not-base64") {
					t.Errorf("error echoes the secret: %v", err)
				}
				return
			}
			if err != nil || len(secs) != tt.n {
				t.Fatalf("ParseSecrets = %d secrets, %v; want %d", len(secs), err, tt.n)
			}
		})
	}
}

// A Secret never shows its key, however it is printed, marshalled or
// logged, alone or inside other values.
func TestSecretNeverPrints(t *testing.T) {
	const key = "top-secret-value"
	s := mustSecrets(t, key)[0]
	type exported struct{ S verify.Secret }
	type unexported struct{ s verify.Secret }
	type slice struct{ secrets []verify.Secret }

	outs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%10.3s"} {
		outs[verb] = fmt.Sprintf(verb, s)
		outs["pointer "+verb] = fmt.Sprintf(verb, &s)
		outs["exported field "+verb] = fmt.Sprintf(verb, exported{s})
		outs["unexported field "+verb] = fmt.Sprintf(verb, unexported{s})
		outs["unexported slice "+verb] = fmt.Sprintf(verb, slice{[]verify.Secret{s}})
	}
	outs["Sprint"] = fmt.Sprint(s, []verify.Secret{s})
	outs["String"] = s.String()
	outs["GoString"] = s.GoString()
	j, err := json.Marshal(exported{s})
	if err != nil {
		t.Fatal(err)
	}
	outs["json"] = string(j)
	txt, _ := s.MarshalText()
	outs["MarshalText"] = string(txt)
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("x", "secret", s, "struct", exported{s})
		outs[fmt.Sprintf("slog %T", h(&buf))] = buf.String()
	}

	keyBytes := []byte(key)
	leaks := []string{key, fmt.Sprintf("%x", key), fmt.Sprint(keyBytes), fmt.Sprint(keyBytes[:4])[1:]}
	for name, out := range outs {
		for _, leak := range leaks {
			if strings.Contains(out, leak) {
				t.Errorf("%s prints the key: %s", name, out)
			}
		}
	}
	if outs["%v"] != "verify.Secret(REDACTED)" || outs["json"] != `{"S":"REDACTED"}` {
		t.Errorf(`%%v = %s, json = %s; want "verify.Secret(REDACTED)", {"S":"REDACTED"}`, outs["%v"], outs["json"])
	}
}

// A Verifier holding secrets prints none of them either.
func TestVerifierNeverPrintsSecrets(t *testing.T) {
	v, err := verify.New("top-secret-value")
	if err != nil {
		t.Fatal(err)
	}
	v.Now = time.Now
	for _, verb := range []string{"%v", "%+v", "%#v", "%d", "%x"} {
		if out := fmt.Sprintf(verb, v); strings.Contains(out, "top-secret") || strings.Contains(out, "116 111 112") ||
			strings.Contains(out, fmt.Sprintf("%x", "top-secret")) {
			t.Errorf("%s prints the key: %s", verb, out)
		}
	}
}
