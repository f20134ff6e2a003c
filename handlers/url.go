package handlers

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/memhook/memhook/internal/redact"
)

// ValidateURL checks that raw is an absolute http(s) URL with a host, such
// as a webhook or router URL from configuration. It refuses an opaque URL
// ("http:user:pw@host", missing "//"), which url.Parse accepts with no
// host. Its error shows the URL as RedactURL does, never a credential;
// the caller names the variable or field it came from.
func ValidateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("URL REDACTED: not a URL (a / ? # @ or space in a password must be percent-encoded)")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL %s: scheme must be http or https", RedactURL(raw))
	}
	if u.Opaque != "" {
		return fmt.Errorf(`URL %s: "//" is missing after %q: write %s://host[:port]/path`, RedactURL(raw), u.Scheme+":", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("URL %s: host is missing", RedactURL(raw))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n > 65535 {
			return fmt.Errorf("URL %s: port out of range (a # or / in a password must be percent-encoded)", RedactURL(raw))
		}
	}
	return nil
}

// RedactURL returns raw fit for logs, errors and status output: user
// information, query values (and bare query names), the fragment, path
// segments that look like tokens, and all of an opaque URL after its
// scheme are replaced by "REDACTED"; a string that does not parse is
// replaced whole. See internal/redact.URL for the exact rules, the same
// for Redis URLs.
func RedactURL(raw string) string { return redact.URL(raw) }
