package transports

import "github.com/redis/go-redis/v9"

// NewClient returns a go-redis client on the Redis c names, with c's
// timeouts (defaults applied), contexts' deadlines bounding every read
// and write, and at most poolSize connections unless the URL says
// pool_size (0: the go-redis default). It does not connect. The caller
// closes it. For the stores beside the transport's streams that share its
// Redis (the attempt log).
func (c RedisConfig) NewClient(poolSize int) (*redis.Client, error) {
	if err := c.prepare(); err != nil {
		return nil, err
	}
	return c.newClient(poolSize)
}
