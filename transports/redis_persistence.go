package transports

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Persistence is what a Redis keeps across a restart, as RedisPersistence
// found it. The streams hold every queued event: a Redis that persists
// nothing loses them all when it restarts.
type Persistence struct {
	// Checked is true when Redis answered CONFIG GET, so that every field
	// is known. A managed Redis may refuse CONFIG: then AOF comes from
	// INFO persistence, AppendFsync and Save are empty, and Warning says
	// what could not be checked.
	Checked bool
	// AOF is true when Redis writes an append-only file (appendonly yes).
	AOF bool
	// AppendFsync is how often the append-only file is synced: "always",
	// "everysec" or "no"; empty when not Checked.
	AppendFsync string
	// Save holds the RDB snapshot points (CONFIG GET save, e.g. "3600 1
	// 300 100 60 10000"); empty when there are none or when not Checked.
	Save string
	// Warning says, for an operator, what a restart of this Redis would
	// lose and what to set; empty when the queue survives a restart.
	Warning string
}

// RDB reports whether Redis writes RDB snapshots (save points are set).
func (p Persistence) RDB() bool { return p.Save != "" }

// RedisPersistence asks the Redis cfg names, on a fresh connection, what it
// persists: CONFIG GET appendonly, appendfsync and save, or, when CONFIG is
// refused (a managed Redis, an ACL), INFO persistence. It returns an error
// only when Redis cannot be asked (unreachable, or cfg is invalid); a
// refused command is reported in Persistence.Warning. Neither holds the
// URL's password. Within ctx and at most DialTimeout + WriteTimeout +
// ReadTimeout per command. For `memhook serve`'s start-up check.
func RedisPersistence(ctx context.Context, cfg RedisConfig) (Persistence, error) {
	if err := cfg.prepare(); err != nil {
		return Persistence{}, err
	}
	client, err := cfg.newClient(1)
	if err != nil {
		return Persistence{}, err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*cfg.publishTimeout())
	defer cancel()
	var p Persistence
	cerr := configPersistence(ctx, client, &p)
	if cerr == nil {
		p.Checked = true
		p.Warning = p.warning()
		return p, nil
	}
	if !refused(cerr) {
		return Persistence{}, fmt.Errorf("redis transport: checking persistence of %s: %w", cfg.RedactedURL(), cerr)
	}
	aof, ierr := infoAOF(ctx, client)
	switch {
	case ierr != nil && !refused(ierr):
		return Persistence{}, fmt.Errorf("redis transport: checking persistence of %s: %w", cfg.RedactedURL(), ierr)
	case ierr != nil:
		p.Warning = fmt.Sprintf("could not check whether Redis persists the queue: CONFIG GET and INFO persistence refused (%v; %v). "+
			"Make sure it has appendonly yes with appendfsync everysec: without persistence a restart of Redis loses every queued event", cerr, ierr)
	case aof:
		p.AOF = true // the fsync policy is unknown, but the queue survives a restart
	default:
		p.Warning = fmt.Sprintf("Redis has no append-only file (INFO persistence: aof_enabled:0) and refused CONFIG GET (%v), so its RDB save points "+
			"could not be checked: without them a restart of Redis loses every queued event, and with RDB alone the events appended since the last snapshot. "+
			"Set appendonly yes and appendfsync everysec", cerr)
	}
	return p, nil
}

// refused reports whether err is Redis answering with an error (the
// command is unknown, renamed or not allowed), not a failure to reach it.
func refused(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && !errors.Is(err, redis.Nil)
}

// configPersistence fills p from CONFIG GET.
func configPersistence(ctx context.Context, client *redis.Client, p *Persistence) error {
	get := func(name string) (string, error) {
		vals, err := client.ConfigGet(ctx, name).Result()
		if err != nil {
			return "", err
		}
		v, ok := vals[name]
		if !ok {
			return "", fmt.Errorf("CONFIG GET %s: no such parameter", name)
		}
		return v, nil
	}
	appendonly, err := get("appendonly")
	if err != nil {
		return err
	}
	if p.AppendFsync, err = get("appendfsync"); err != nil {
		return err
	}
	if p.Save, err = get("save"); err != nil {
		return err
	}
	p.AOF = appendonly == "yes"
	p.Save = strings.TrimSpace(p.Save)
	return nil
}

// infoAOF reads aof_enabled from INFO persistence.
func infoAOF(ctx context.Context, client *redis.Client) (bool, error) {
	info, err := client.Info(ctx, "persistence").Result()
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "aof_enabled:"); ok {
			return v == "1", nil
		}
	}
	return false, errors.New("INFO persistence has no aof_enabled")
}

// warning is the advice for a Checked p.
func (p Persistence) warning() string {
	switch {
	case !p.AOF && !p.RDB():
		return `Redis persists nothing (appendonly no, save ""): a restart of Redis loses every queued event. ` +
			`Set appendonly yes and appendfsync everysec (a crash loses at most about a second of appends; always: none, slower); ` +
			`RDB save points alone (save 60 1000) lose the events appended since the last snapshot`
	case !p.AOF:
		return fmt.Sprintf("Redis persists only RDB snapshots (appendonly no, save %q): a restart of Redis loses the events appended since the last snapshot. "+
			"Set appendonly yes and appendfsync everysec", p.Save)
	case p.AppendFsync == "no":
		return "Redis writes an append-only file but leaves syncing it to the OS (appendfsync no): a crash of the host loses the appends not yet written, " +
			"typically up to 30 s. Set appendfsync everysec"
	}
	return ""
}
