package transports

import (
	"context"
	"fmt"
)

// pausesKey is the hash of the endpoints an operator paused: field the
// endpoint's name, value "paused". Every router on the Redis follows it.
func (t *RedisTransport) pausesKey() string { return t.cfg.EventsTopic + ":paused" }

// SetPaused keeps (paused true) or clears an operator's pause of endpoint
// in Redis, for every router on it.
func (t *RedisTransport) SetPaused(ctx context.Context, endpoint string, paused bool) error {
	var err error
	if paused {
		err = t.pub.client.HSet(ctx, t.pausesKey(), endpoint, "paused").Err()
	} else {
		err = t.pub.client.HDel(ctx, t.pausesKey(), endpoint).Err()
	}
	if err != nil {
		return fmt.Errorf("redis transport: %w", err)
	}
	return nil
}

// Paused returns the endpoints an operator paused.
func (t *RedisTransport) Paused(ctx context.Context) (map[string]bool, error) {
	all, err := t.pub.client.HGetAll(ctx, t.pausesKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis transport: %w", err)
	}
	out := make(map[string]bool, len(all))
	for k := range all {
		out[k] = true
	}
	return out, nil
}
