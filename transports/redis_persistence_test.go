package transports_test

import (
	"context"
	"strings"
	"testing"

	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

func TestRedisPersistence(t *testing.T) {
	const password = "s3cret-pass"
	tests := []struct {
		name       string
		persistent bool     // redistest.Start (AOF, fsync always) or StartWithoutPersistence
		config     []string // CONFIG SET name value … after start
		denied     string   // commands the ACL user may not run, e.g. "-config"
		want       transports.Persistence
		warn       []string // the warning says all of these; none: no warning
	}{
		{name: "nothing persisted", want: transports.Persistence{Checked: true, AppendFsync: "everysec"},
			warn: []string{"loses every queued event", "appendonly yes", "appendfsync everysec", "last snapshot"}},
		{name: "RDB only", config: []string{"save", "60 1000"},
			want: transports.Persistence{Checked: true, AppendFsync: "everysec", Save: "60 1000"},
			warn: []string{"RDB", "since the last snapshot", "appendonly yes", "appendfsync everysec"}},
		{name: "AOF synced always", persistent: true,
			want: transports.Persistence{Checked: true, AOF: true, AppendFsync: "always"}},
		{name: "AOF synced every second", persistent: true, config: []string{"appendfsync", "everysec"},
			want: transports.Persistence{Checked: true, AOF: true, AppendFsync: "everysec"}},
		{name: "AOF synced by the OS", persistent: true, config: []string{"appendfsync", "no"},
			want: transports.Persistence{Checked: true, AOF: true, AppendFsync: "no"},
			warn: []string{"appendfsync no", "appendfsync everysec"}},
		{name: "CONFIG refused, AOF on", persistent: true, denied: "-config",
			want: transports.Persistence{AOF: true}},
		{name: "CONFIG refused, AOF off", denied: "-config",
			want: transports.Persistence{},
			warn: []string{"refused CONFIG GET", "could not be checked", "appendonly yes"}},
		{name: "CONFIG and INFO refused", denied: "-config -info",
			want: transports.Persistence{},
			warn: []string{"could not check", "appendonly yes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *redistest.Server
			if tt.persistent {
				srv = redistest.Start(t)
			} else {
				srv = redistest.StartWithoutPersistence(t)
			}
			ctx := context.Background()
			rc := rawClient(t, srv.URL())
			for i := 0; i < len(tt.config); i += 2 {
				if err := rc.ConfigSet(ctx, tt.config[i], tt.config[i+1]).Err(); err != nil {
					t.Fatal(err)
				}
			}
			url := srv.URL()
			if tt.denied != "" {
				args := []any{"ACL", "SETUSER", "limited", "on", ">" + password, "~*", "&*", "+@all"}
				for _, d := range strings.Fields(tt.denied) {
					args = append(args, d)
				}
				if err := rc.Do(ctx, args...).Err(); err != nil {
					t.Fatal(err)
				}
				url = "redis://limited:" + password + "@" + srv.Addr() + "/0"
			}
			got, err := transports.RedisPersistence(ctx, transports.RedisConfig{URL: url})
			if err != nil {
				t.Fatalf("RedisPersistence: %v", err)
			}
			warning := got.Warning
			t.Logf("warning: %q", warning)
			got.Warning = ""
			if got != tt.want {
				t.Errorf("RedisPersistence = %+v, want %+v", got, tt.want)
			}
			if len(tt.warn) == 0 && warning != "" {
				t.Errorf("warning %q, want none", warning)
			}
			for _, w := range tt.warn {
				if !strings.Contains(warning, w) {
					t.Errorf("warning %q does not say %q", warning, w)
				}
			}
			if strings.Contains(warning, password) {
				t.Errorf("warning %q holds the password", warning)
			}
		})
	}
}

func TestRedisPersistenceUnreachable(t *testing.T) {
	url := "redis://:s3cret-pass@" + closedPort(t) + "/0"
	_, err := transports.RedisPersistence(context.Background(), transports.RedisConfig{URL: url})
	if err == nil {
		t.Fatal("RedisPersistence of a closed port succeeded")
	}
	if strings.Contains(err.Error(), "s3cret-pass") {
		t.Errorf("err = %q holds the password", err)
	}
}
