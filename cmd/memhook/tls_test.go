package main_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/internal/proc"
)

// certFiles writes a fresh self-signed certificate for 127.0.0.1 and its
// key into dir, and returns their paths and the certificate.
func certFiles(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "memhook test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// trusting returns a client that trusts only cert, speaking TLS up to max
// (0: any).
func trusting(cert *x509.Certificate, maxVersion uint16) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: maxVersion}},
		Timeout:   5 * time.Second,
	}
}

// With MEMHOOK_TLS_CERT and MEMHOOK_TLS_KEY, serve answers https (TLS 1.2
// at least) and nothing else, and its start-up line says https.
func TestServeTLS(t *testing.T) {
	certFile, keyFile, cert := certFiles(t, t.TempDir())
	addr, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	m := startMemhook(t, env{"MEMHOOK_ADDR": addr}, "serve", "--tls-cert="+certFile, "--tls-key="+keyFile)
	line := m.waitLog(30*time.Second, `msg="memhook: serving"`)
	if got, _ := logAttr(line, "url"); got != "https://"+addr {
		t.Errorf("start-up line: url=%q, want https://%s\n%s", got, addr, line)
	}
	client := trusting(cert, 0)
	code, _, body, err := do(client, http.MethodGet, "https://"+addr+"/healthz", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET https://%s/healthz: %d %s %v", addr, code, body, err)
	}
	// Plain http gets no answer from the handlers: net/http answers a
	// plain request on a TLS port with 400 and closes.
	if code, _, body, err := do(httpClient(), http.MethodGet, "http://"+addr+"/healthz", nil); err == nil && code == http.StatusOK {
		t.Errorf("plain http to the TLS port answered %d %s", code, body)
	}
	if _, _, _, err := do(trusting(cert, tls.VersionTLS11), http.MethodGet, "https://"+addr+"/healthz", nil); err == nil {
		t.Error("a TLS 1.1 client was served")
	}
	if _, _, _, err := do(trusting(&x509.Certificate{}, 0), http.MethodGet, "https://"+addr+"/healthz", nil); err == nil {
		t.Error("a client that does not trust the certificate was served")
	}
	if code := m.stop(30 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// Bad TLS settings stop start-up with exit 2 and one line naming the
// variable (or flag), never the key.
func TestServeTLSBadConfig(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := certFiles(t, dir)
	other := t.TempDir()
	_, otherKey, _ := certFiles(t, other)
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	keyBody := strings.Split(string(keyPEM), "\n")[1] // a line of the key's base64
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name    string
		env     env
		args    []string
		want    []string
		notWant []string
	}{
		{name: "cert only", env: env{"MEMHOOK_TLS_CERT": certFile},
			want: []string{"MEMHOOK_TLS_CERT", "MEMHOOK_TLS_KEY", "both or neither"}},
		{name: "key only", env: env{"MEMHOOK_TLS_KEY": keyFile},
			want: []string{"MEMHOOK_TLS_KEY", "MEMHOOK_TLS_CERT", "both or neither"}},
		{name: "key only by flag", args: []string{"--tls-key=" + keyFile},
			want: []string{"--tls-key", "MEMHOOK_TLS_CERT", "both or neither"}},
		{name: "cert unreadable", env: env{"MEMHOOK_TLS_CERT": missing, "MEMHOOK_TLS_KEY": keyFile},
			want: []string{"MEMHOOK_TLS_CERT", missing}, notWant: []string{"MEMHOOK_TLS_KEY"}},
		{name: "key unreadable", env: env{"MEMHOOK_TLS_CERT": certFile, "MEMHOOK_TLS_KEY": missing},
			want: []string{"MEMHOOK_TLS_KEY", missing}, notWant: []string{"MEMHOOK_TLS_CERT"}},
		{name: "cert not PEM", env: env{"MEMHOOK_TLS_CERT": notPEM, "MEMHOOK_TLS_KEY": keyFile},
			want: []string{"MEMHOOK_TLS_CERT", "certificate"}, notWant: []string{keyBody}},
		{name: "key is the certificate", env: env{"MEMHOOK_TLS_CERT": certFile, "MEMHOOK_TLS_KEY": certFile},
			want: []string{"MEMHOOK_TLS_KEY", "key"}},
		{name: "key of another certificate", env: env{"MEMHOOK_TLS_CERT": certFile, "MEMHOOK_TLS_KEY": otherKey},
			want: []string{"MEMHOOK_TLS_CERT", "MEMHOOK_TLS_KEY", "does not match"}, notWant: []string{keyBody}},
		{name: "both by flag, mismatched", args: []string{"--tls-cert=" + certFile, "--tls-key=" + otherKey},
			want: []string{"--tls-cert", "--tls-key", "does not match"}, notWant: []string{"MEMHOOK_TLS"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, err := proc.FreeAddr()
			if err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := run(t, tt.env.with("MEMHOOK_ADDR", addr), 30*time.Second, append([]string{"serve"}, tt.args...)...)
			refusedInOneLine(t, code, stdout, stderr, tt.want, tt.notWant)
		})
	}
}
