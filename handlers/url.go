package handlers

import "github.com/memhook/memhook/internal/redact"

// ValidateURL checks that raw is an absolute http(s) URL with a host, such
// as a webhook or router URL from configuration (redact.ValidateHTTPURL):
// opaque URLs ("http:user:pw@host", missing "//") are refused. Its error
// shows the URL as RedactURL does, never a credential; the caller names
// the variable or field it came from.
func ValidateURL(raw string) error { return redact.ValidateHTTPURL(raw) }

// RedactURL returns raw fit for logs, errors and status output: user
// information, query values (and bare query names), the fragment, path
// segments that look like tokens, and all of an opaque URL after its
// scheme are replaced by "REDACTED"; a string that does not parse is
// replaced whole. See internal/redact.URL for the exact rules, the same
// for Redis URLs.
func RedactURL(raw string) string { return redact.URL(raw) }
