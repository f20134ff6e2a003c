// Package verify signs and verifies webhooks the Standard Webhooks way
// (https://www.standardwebhooks.com): headers webhook-id, webhook-timestamp
// (Unix seconds) and webhook-signature, "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>", several space-separated while secrets rotate.
//
// memhook's signer middleware calls Sign on every delivery attempt; Go
// receivers use a Verifier (Verify by hand, or Middleware in front of a
// handler), or any other Standard Webhooks library: the scheme is the same.
// The package imports only the standard library.
package verify

// Standard Webhooks header names. Sign's result goes in HeaderSignature;
// the sender sets HeaderID (the same on every retry of one message) and
// HeaderTimestamp (Unix seconds, the ts given to Sign) itself.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)
