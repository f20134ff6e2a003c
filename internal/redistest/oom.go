package redistest

import (
	"testing"

	"github.com/memhook/memhook/internal/redisserver"
)

// FillKey is the key Server.Fill stores to use up the server's memory.
const FillKey = redisserver.FillKey

// StartWithoutPersistence starts a private redis-server for t, whatever
// REDIS_URL says, with no persistence at all (--save "" --appendonly no):
// a restart loses everything, as with a Redis run without configuration.
// The server is stopped in t.Cleanup. Without redis-server on PATH, t is
// skipped. Call it from the test goroutine.
func StartWithoutPersistence(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}
