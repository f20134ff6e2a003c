package redact

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
)

// ValidateHTTPURL checks that raw is an absolute http(s) URL with a host, such
// as a webhook or router URL from configuration. It refuses an opaque URL
// ("http:user:pw@host", missing "//"), which url.Parse accepts with no
// host. Its error shows the URL as URL does, never a credential;
// the caller names the variable or field it came from.
func ValidateHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("URL REDACTED: not a URL (a / ? # @ or space in a password must be percent-encoded)")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL %s: scheme must be http or https", URL(raw))
	}
	if u.Opaque != "" {
		return fmt.Errorf(`URL %s: "//" is missing after %q: write %s://host[:port]/path`, URL(raw), u.Scheme+":", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("URL %s: host is missing", URL(raw))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n > 65535 {
			return fmt.Errorf("URL %s: port out of range (a # or / in a password must be percent-encoded)", URL(raw))
		}
	}
	return nil
}
