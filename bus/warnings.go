package bus

import (
	"log/slog"
	"net"
	"net/url"

	"github.com/memhook/memhook/handlers"
)

// warnLegacySecret logs, once (New calls it at start), that the seed's
// X-Webhook-Secret header sends the signing secret itself on every
// webhook, when c makes this process's router send it: a secret, the
// header not disabled, a webhook URL, and a transport that delivers here
// (memory, or redis; on transport http the router process does). Over
// plain http to a host that is not loopback the secret travels
// unencrypted: that is logged at ERROR. The secret is never logged; the
// URL only redacted.
func warnLegacySecret(log *slog.Logger, c Config) {
	if c.Secret == "" || c.DisableLegacySecretHeader || c.WebhookURL == "" || c.Transport == TransportHTTP {
		return
	}
	const off = "set MEMHOOK_LEGACY_SECRET_HEADER=false (Config.DisableLegacySecretHeader) once the receivers check webhook-signature"
	u, err := url.Parse(c.WebhookURL)
	if err == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		log.Error("memhook: the webhook secret travels unencrypted: X-Webhook-Secret carries it in clear over plain http on every webhook, "+
			"readable by anyone on the way and enough to forge webhooks; use an https MEM0_WEBHOOK_URL, or "+off,
			"url", handlers.RedactURL(c.WebhookURL))
		return
	}
	log.Warn("memhook: X-Webhook-Secret sends the signing secret itself on every webhook (the seed's header): "+
		"whoever sees one request can forge webhooks; "+off,
		"url", handlers.RedactURL(c.WebhookURL))
}

// isLoopback reports whether host, a URL's host name, is this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
