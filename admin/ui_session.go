package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SessionLifetime is how long a dashboard login lasts. The session ends
// sooner when `memhook serve` restarts: its key is per process.
const SessionLifetime = 12 * time.Hour

// Cookie names of the dashboard.
const (
	SessionCookie = "memhook_session"
	flashCookie   = "memhook_flash"
)

// sessions issues and checks the dashboard's session cookies. A session
// value is nonce|expiry, then an HMAC-SHA256 of it and of the admin token
// under a key drawn at start: the token itself is never in the cookie,
// and a value made for another token or another process does not pass.
type sessions struct {
	key   []byte
	token []byte
	now   func() time.Time
}

func newSessions(token string, now func() time.Time) (*sessions, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return &sessions{key: key, token: []byte(token), now: now}, nil
}

// tokenOK compares a submitted token with the admin token in constant
// time (the HMACs of both, so that the length leaks nothing either).
func (s *sessions) tokenOK(given string) bool {
	return hmac.Equal(s.mac("token", []byte(given)), s.mac("token", s.token))
}

func (s *sessions) mac(purpose string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(purpose))
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write(p)
	}
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding

// issue returns a new session value, valid for SessionLifetime.
func (s *sessions) issue() (string, error) {
	head := make([]byte, 16+8)
	if _, err := rand.Read(head[:16]); err != nil {
		return "", err
	}
	binary.BigEndian.PutUint64(head[16:], uint64(s.now().Add(SessionLifetime).Unix()))
	return b64.EncodeToString(head) + "." + b64.EncodeToString(s.mac("session", head, s.token)), nil
}

var errNoSession = errors.New("admin: no valid dashboard session")

// check returns the session value of r's cookie when it is one this
// process issued for the admin token and it has not expired.
func (s *sessions) check(r *http.Request) (string, error) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return "", errNoSession
	}
	headB64, macB64, ok := strings.Cut(c.Value, ".")
	if !ok {
		return "", errNoSession
	}
	head, err1 := b64.DecodeString(headB64)
	mac, err2 := b64.DecodeString(macB64)
	if err1 != nil || err2 != nil || len(head) != 24 {
		return "", errNoSession
	}
	if !hmac.Equal(mac, s.mac("session", head, s.token)) {
		return "", errNoSession
	}
	if s.now().Unix() >= int64(binary.BigEndian.Uint64(head[16:])) {
		return "", errNoSession
	}
	return c.Value, nil
}

// csrf returns the CSRF token of a session: each session has its own.
func (s *sessions) csrf(session string) string {
	return b64.EncodeToString(s.mac("csrf", []byte(session)))
}

// csrfOK compares a form's CSRF token with the session's in constant time.
func (s *sessions) csrfOK(session, given string) bool {
	return subtle.ConstantTimeCompare([]byte(s.csrf(session)), []byte(given)) == 1
}

// sameOrigin refuses a cross-site request: net/http's
// CrossOriginProtection (Sec-Fetch-Site, then Origin against Host); when
// the browser sent neither header, a Referer naming another host. A
// request with none of them (not a browser's) passes to the CSRF token.
func sameOrigin(cop *http.CrossOriginProtection, r *http.Request) bool {
	if err := cop.Check(r); err != nil {
		return false
	}
	if r.Header.Get("Sec-Fetch-Site") != "" || r.Header.Get("Origin") != "" {
		return true // checked above
	}
	ref := r.Header.Get("Referer")
	if ref == "" {
		return true
	}
	u, err := url.Parse(ref)
	return err == nil && u.Host == r.Host
}

// cookie returns one of the dashboard's cookies: HttpOnly, SameSite
// Strict, on the dashboard's path only, Secure over TLS.
func cookie(r *http.Request, name, value string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{
		Name: name, Value: value, Path: UIPath,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
		MaxAge: int(maxAge / time.Second),
	}
	if maxAge < 0 {
		c.MaxAge = -1
	}
	return c
}
