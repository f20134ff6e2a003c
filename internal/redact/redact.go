// Package redact makes URLs fit for logs, errors and status output, and
// checks the URLs memhook sends to. Every package that prints a configured
// URL goes through it.
package redact

import (
	"fmt"
	"net/url"
	"strings"
)

// URL returns raw fit for logs, errors and status output: user
// information, query values and bare query names are replaced by
// "REDACTED" (a token often travels in either). A string that does not
// parse is replaced whole.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "REDACTED"
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		// Keep the names, hide the values; a bare name may itself be a
		// secret ("?s3cr3t"), so it is hidden whole.
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			if k, _, ok := strings.Cut(p, "="); ok {
				parts[i] = k + "=REDACTED"
			} else {
				parts[i] = "REDACTED"
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	return u.String()
}

// ValidateHTTPURL checks that raw is an absolute http or https URL with a
// host. Its error shows the URL redacted.
func ValidateHTTPURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("webhook URL is not a URL: %s", URL(raw))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("webhook URL %s: scheme must be http or https", URL(raw))
	}
	if u.Host == "" {
		return fmt.Errorf("webhook URL %s: host is missing", URL(raw))
	}
	return nil
}
