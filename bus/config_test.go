package bus_test

import (
	"maps"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
)

// mapLookup is a ConfigFromLookup lookup over env.
func mapLookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// seedEnv is the seed document's example configuration.
func seedEnv() map[string]string {
	return map[string]string{
		"MEM0_WEBHOOK_URL":         "https://your-server.com/webhooks/memory",
		"MEM0_WEBHOOK_TOKEN":       "your-secret-token",
		"MEM0_WEBHOOK_SECRET":      "your-signing-secret",
		"MEM0_WEBHOOK_TIMEOUT":     "30",
		"MEM0_WEBHOOK_RETRY_COUNT": "3",
		"MEM0_WEBHOOK_RETRY_DELAY": "1.0",
		"MEM0_WEBHOOK_EVENTS":      "all",
		"BOT_VERSION":              "1.0.0",
	}
}

// seedConfig is what seedEnv reads as.
func seedConfig() bus.Config {
	return bus.Config{
		WebhookURL:    "https://your-server.com/webhooks/memory",
		Token:         "your-secret-token",
		Secret:        "your-signing-secret",
		Timeout:       30 * time.Second,
		RetryCount:    3,
		RetryDelay:    time.Second,
		MaxRetryAfter: 60 * time.Second,
		Events:        "all",
		BotVersion:    "1.0.0",
		Source:        "markdown-brain-bot",
		Transport:     "memory",
		QueueCapacity: 10000,
		Concurrency:   16,
		RouterURL:     "http://127.0.0.1:8000",
		RedisGroup:    "memhook",
		RedisConsumer: defaultConsumer(),
		PauseAfter:    bus.DefaultPauseAfter,
	}
}

// defaultConsumer is the Redis consumer name a process gets by default.
func defaultConsumer() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "memhook"
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

// problems lists the errors joined in err, one per bad value.
func problems(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestConfigFromLookupDefaultsAreTheSeeds(t *testing.T) {
	got, err := bus.ConfigFromLookup(mapLookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := seedConfig()
	want.WebhookURL, want.Token, want.Secret = "", "", ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults =\n%+v\nwant\n%+v", got, want)
	}
}

func TestConfigFromLookupReadsTheSeedsExample(t *testing.T) {
	got, err := bus.ConfigFromLookup(mapLookup(seedEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if want := seedConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("config =\n%+v\nwant\n%+v", got, want)
	}
}

func TestConfigFromLookupGoodValues(t *testing.T) {
	tests := []struct {
		name   string
		env    string
		value  string
		change func(*bus.Config)
	}{
		{name: "timeout seconds", env: "MEM0_WEBHOOK_TIMEOUT", value: "10", change: func(c *bus.Config) { c.Timeout = 10 * time.Second }},
		{name: "fractional timeout", env: "MEM0_WEBHOOK_TIMEOUT", value: "2.5", change: func(c *bus.Config) { c.Timeout = 2500 * time.Millisecond }},
		{name: "timeout as a Go duration", env: "MEM0_WEBHOOK_TIMEOUT", value: "1m30s", change: func(c *bus.Config) { c.Timeout = 90 * time.Second }},
		{name: "spaces around a value", env: "MEM0_WEBHOOK_TIMEOUT", value: " 45 ", change: func(c *bus.Config) { c.Timeout = 45 * time.Second }},
		{name: "retry count 0 disables retries", env: "MEM0_WEBHOOK_RETRY_COUNT", value: "0", change: func(c *bus.Config) { c.RetryCount = bus.Disabled }},
		{name: "retry count 5", env: "MEM0_WEBHOOK_RETRY_COUNT", value: "5", change: func(c *bus.Config) { c.RetryCount = 5 }},
		{name: "retry delay 0.25", env: "MEM0_WEBHOOK_RETRY_DELAY", value: "0.25", change: func(c *bus.Config) { c.RetryDelay = 250 * time.Millisecond }},
		{name: "retry delay 500ms", env: "MEM0_WEBHOOK_RETRY_DELAY", value: "500ms", change: func(c *bus.Config) { c.RetryDelay = 500 * time.Millisecond }},
		{name: "event list", env: "MEM0_WEBHOOK_EVENTS", value: "memory_added,memory_deleted", change: func(c *bus.Config) { c.Events = "memory_added,memory_deleted" }},
		{name: "no events", env: "MEM0_WEBHOOK_EVENTS", value: "none", change: func(c *bus.Config) { c.Events = "none" }},
		{name: "bot version", env: "BOT_VERSION", value: "2.4.1", change: func(c *bus.Config) { c.BotVersion = "2.4.1" }},
		{name: "no URL turns webhooks off", env: "MEM0_WEBHOOK_URL", value: "", change: func(c *bus.Config) { c.WebhookURL = "" }},
		{name: "http URL", env: "MEM0_WEBHOOK_URL", value: "http://127.0.0.1:3000/memory-notifications", change: func(c *bus.Config) { c.WebhookURL = "http://127.0.0.1:3000/memory-notifications" }},
		{name: "no token", env: "MEM0_WEBHOOK_TOKEN", value: "", change: func(c *bus.Config) { c.Token = "" }},
		{name: "source", env: "MEMHOOK_SOURCE", value: "my-bot", change: func(c *bus.Config) { c.Source = "my-bot" }},
		{name: "redis transport", env: "MEMHOOK_TRANSPORT", value: "redis", change: func(c *bus.Config) { c.Transport = "redis" }},
		{name: "transport in capitals", env: "MEMHOOK_TRANSPORT", value: "HTTP", change: func(c *bus.Config) { c.Transport = "http" }},
		{name: "queue capacity", env: "MEMHOOK_QUEUE_CAPACITY", value: "100", change: func(c *bus.Config) { c.QueueCapacity = 100 }},
		{name: "queue capacity 0 is the default", env: "MEMHOOK_QUEUE_CAPACITY", value: "0", change: func(*bus.Config) {}},
		{name: "concurrency", env: "MEMHOOK_CONCURRENCY", value: "4", change: func(c *bus.Config) { c.Concurrency = 4 }},
		{name: "max Retry-After", env: "MEMHOOK_MAX_RETRY_AFTER", value: "5", change: func(c *bus.Config) { c.MaxRetryAfter = 5 * time.Second }},
		{name: "legacy secret header off", env: "MEMHOOK_LEGACY_SECRET_HEADER", value: "false", change: func(c *bus.Config) { c.DisableLegacySecretHeader = true }},
		{name: "legacy secret header on", env: "MEMHOOK_LEGACY_SECRET_HEADER", value: "true", change: func(*bus.Config) {}},
		{name: "router URL", env: "MEMHOOK_ROUTER_URL", value: "http://router:8000", change: func(c *bus.Config) { c.RouterURL = "http://router:8000" }},
		{name: "ingest token", env: "MEMHOOK_INGEST_TOKEN", value: "ingest", change: func(c *bus.Config) { c.IngestToken = "ingest" }},
		{name: "retry schedule", env: "MEMHOOK_RETRY_SCHEDULE", value: "5s,5m,30m,2h,5h,10h,10h", change: func(c *bus.Config) {
			c.RetrySchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
		}},
		{name: "retry schedule of one entry", env: "MEMHOOK_RETRY_SCHEDULE", value: "250ms", change: func(c *bus.Config) {
			c.RetrySchedule = []time.Duration{250 * time.Millisecond}
		}},
		{name: "retry schedule with spaces", env: "MEMHOOK_RETRY_SCHEDULE", value: " 1s , 1m30s,2h ", change: func(c *bus.Config) {
			c.RetrySchedule = []time.Duration{time.Second, 90 * time.Second, 2 * time.Hour}
		}},
		{name: "retry schedule not sorted", env: "MEMHOOK_RETRY_SCHEDULE", value: "1m,1s", change: func(c *bus.Config) {
			c.RetrySchedule = []time.Duration{time.Minute, time.Second}
		}},
		{name: "blank retry schedule is the seed's", env: "MEMHOOK_RETRY_SCHEDULE", value: "  ", change: func(*bus.Config) {}},
		{name: "pause after", env: "MEMHOOK_PAUSE_AFTER", value: "3", change: func(c *bus.Config) { c.PauseAfter = 3 }},
		{name: "pause after 0 is never", env: "MEMHOOK_PAUSE_AFTER", value: "0", change: func(c *bus.Config) { c.PauseAfter = bus.Disabled }},
		{name: "endpoints file", env: "MEMHOOK_ENDPOINTS_FILE", value: "testdata/config-endpoints.yaml", change: func(c *bus.Config) {
			c.Endpoints = []bus.Endpoint{{Name: "crm", URL: "https://crm.example.com/hooks", Events: "memory_error"}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := seedEnv()
			env[tt.env] = tt.value
			got, err := bus.ConfigFromLookup(mapLookup(env))
			if err != nil {
				t.Fatal(err)
			}
			want := seedConfig()
			tt.change(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s=%q reads as\n%+v\nwant\n%+v", tt.env, tt.value, got, want)
			}
		})
	}
}

func TestConfigFromLookupBadValues(t *testing.T) {
	tests := []struct {
		name        string
		env         string
		value       string
		valueHidden bool   // a URL that does not parse is withheld whole: it may hold credentials
		want        string // the error also says this (which entry of a list)
	}{
		{name: "timeout not a number", env: "MEM0_WEBHOOK_TIMEOUT", value: "abc"},
		{name: "timeout zero", env: "MEM0_WEBHOOK_TIMEOUT", value: "0"},
		{name: "timeout negative", env: "MEM0_WEBHOOK_TIMEOUT", value: "-1"},
		{name: "timeout NaN", env: "MEM0_WEBHOOK_TIMEOUT", value: "NaN"},
		{name: "timeout beyond a Duration", env: "MEM0_WEBHOOK_TIMEOUT", value: "1e300"},
		{name: "retry count negative", env: "MEM0_WEBHOOK_RETRY_COUNT", value: "-1"},
		{name: "retry count not a number", env: "MEM0_WEBHOOK_RETRY_COUNT", value: "x"},
		{name: "retry count fractional", env: "MEM0_WEBHOOK_RETRY_COUNT", value: "1.5"},
		{name: "retry delay negative", env: "MEM0_WEBHOOK_RETRY_DELAY", value: "-0.5"},
		{name: "retry delay not a number", env: "MEM0_WEBHOOK_RETRY_DELAY", value: "soon"},
		{name: "unknown event", env: "MEM0_WEBHOOK_EVENTS", value: "memory_added,memory_exploded"},
		{name: "ftp URL", env: "MEM0_WEBHOOK_URL", value: "ftp://x"},
		{name: "relative URL", env: "MEM0_WEBHOOK_URL", value: "/webhooks/memory"},
		{name: "URL without host", env: "MEM0_WEBHOOK_URL", value: "https:///webhooks/memory"},
		{name: "not a URL", env: "MEM0_WEBHOOK_URL", value: "http://your server.com/webhooks", valueHidden: true},
		{name: "kafka transport", env: "MEMHOOK_TRANSPORT", value: "kafka"},
		{name: "negative queue capacity", env: "MEMHOOK_QUEUE_CAPACITY", value: "-5"},
		{name: "queue capacity not a number", env: "MEMHOOK_QUEUE_CAPACITY", value: "lots"},
		{name: "negative concurrency", env: "MEMHOOK_CONCURRENCY", value: "-1"},
		{name: "negative max Retry-After", env: "MEMHOOK_MAX_RETRY_AFTER", value: "-1"},
		{name: "legacy header maybe", env: "MEMHOOK_LEGACY_SECRET_HEADER", value: "maybe"},
		{name: "ftp router URL", env: "MEMHOOK_ROUTER_URL", value: "ftp://router"},
		// Without "//" a URL is opaque: no host, and all of it may be a
		// credential.
		{name: "opaque URL", env: "MEM0_WEBHOOK_URL", value: "http:user:pw@host/x", valueHidden: true},
		{name: "opaque router URL", env: "MEMHOOK_ROUTER_URL", value: "http:user:pw@router:8000", valueHidden: true},
		{name: "opaque Redis URL", env: "MEMHOOK_REDIS_URL", value: "redis:pw@host:1", valueHidden: true},
		{name: "Redis URL without host", env: "MEMHOOK_REDIS_URL", value: "redis:///0"},
		{name: "URL with a port only", env: "MEM0_WEBHOOK_URL", value: "http://:8080/x"},
		{name: "retry schedule entry not a duration", env: "MEMHOOK_RETRY_SCHEDULE", value: "1s,soon,2s", want: `entry 2 ("soon") is not a Go duration`},
		{name: "retry schedule entry without unit", env: "MEMHOOK_RETRY_SCHEDULE", value: "5", want: `entry 1 ("5") is not a Go duration`},
		{name: "retry schedule entry zero", env: "MEMHOOK_RETRY_SCHEDULE", value: "1s,0s", want: `entry 2 ("0s") must be more than 0`},
		{name: "retry schedule entry negative", env: "MEMHOOK_RETRY_SCHEDULE", value: "-1s,5s", want: `entry 1 ("-1s") must be more than 0`},
		{name: "retry schedule entry empty", env: "MEMHOOK_RETRY_SCHEDULE", value: "1s,,2s", want: `entry 2 ("") is not a Go duration`},
		{name: "retry schedule trailing comma", env: "MEMHOOK_RETRY_SCHEDULE", value: "1s,2s,", want: `entry 3 ("") is not a Go duration`},
		{name: "retry schedule entry beyond a Duration", env: "MEMHOOK_RETRY_SCHEDULE", value: "1s,9999999h", want: `entry 2 ("9999999h")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := seedEnv()
			env[tt.env] = tt.value
			_, err := bus.ConfigFromLookup(mapLookup(env))
			if err == nil {
				t.Fatalf("%s=%q accepted", tt.env, tt.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.env) {
				t.Errorf("error %q does not name %s", msg, tt.env)
			}
			if !tt.valueHidden && !strings.Contains(msg, tt.value) {
				t.Errorf("error %q does not show the value %q", msg, tt.value)
			}
			if tt.valueHidden && strings.Contains(msg, tt.value) {
				t.Errorf("error %q shows the unparsable URL", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", msg, tt.want)
			}
			if n := len(problems(err)); n != 1 {
				t.Errorf("one bad value reported as %d problems: %q", n, msg)
			}
		})
	}
}

func TestConfigFromLookupReportsEveryBadValue(t *testing.T) {
	bad := map[string]string{
		"MEM0_WEBHOOK_URL":             "ftp://x",
		"MEM0_WEBHOOK_TIMEOUT":         "abc",
		"MEM0_WEBHOOK_RETRY_COUNT":     "x",
		"MEM0_WEBHOOK_RETRY_DELAY":     "-1",
		"MEM0_WEBHOOK_EVENTS":          "bogus",
		"MEMHOOK_TRANSPORT":            "kafka",
		"MEMHOOK_QUEUE_CAPACITY":       "-5",
		"MEMHOOK_LEGACY_SECRET_HEADER": "maybe",
		"MEMHOOK_CONCURRENCY":          "-2",
		"MEMHOOK_MAX_RETRY_AFTER":      "-3",
		"MEMHOOK_ROUTER_URL":           "ftp://router",
		"MEMHOOK_RETRY_SCHEDULE":       "1s,x",
	}
	env := seedEnv()
	maps.Copy(env, bad)
	_, err := bus.ConfigFromLookup(mapLookup(env))
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for name, value := range bad {
		if !strings.Contains(err.Error(), name+`="`+value+`"`) && !strings.Contains(err.Error(), name+": URL "+value) {
			t.Errorf("error does not report %s=%s:\n%v", name, value, err)
		}
	}
	if n := len(problems(err)); n != len(bad) {
		t.Errorf("%d bad values reported as %d problems:\n%v", len(bad), n, err)
	}
}

func TestConfigErrorsNeverShowCredentials(t *testing.T) {
	const (
		password = "hunter2-PASSWORD"
		query    = "s3cr3t-QUERY"
		token    = "tok-ENV-SECRET"
		secret   = "sec-ENV-SECRET"
		ingest   = "ingest-ENV-SECRET"
	)
	tests := []struct {
		name string
		env  string
		url  string
	}{
		{name: "ftp URL with user and password", env: "MEM0_WEBHOOK_URL", url: "ftp://user:" + password + "@example.com/hook?token=" + query},
		{name: "URL without host", env: "MEM0_WEBHOOK_URL", url: "https://user:" + password + "@/hook?token=" + query},
		{name: "unparsable URL with password", env: "MEM0_WEBHOOK_URL", url: "http://user:" + password + "@exa mple.com/?token=" + query},
		{name: "bad port", env: "MEM0_WEBHOOK_URL", url: "http://user:" + password + "@example.com:port/?token=" + query},
		{name: "token as the user", env: "MEM0_WEBHOOK_URL", url: "ftp://" + password + "@example.com/?token=" + query},
		{name: "query only", env: "MEM0_WEBHOOK_URL", url: "ftp://example.com/hook?token=" + query + "&x=" + password},
		{name: "router URL", env: "MEMHOOK_ROUTER_URL", url: "ftp://admin:" + password + "@router/?token=" + query},
		{name: "opaque URL", env: "MEM0_WEBHOOK_URL", url: "http:user:" + password + "@example.com/hook?token=" + query},
		{name: "opaque URL, password only", env: "MEM0_WEBHOOK_URL", url: "https:" + password + "@example.com"},
		{name: "opaque router URL", env: "MEMHOOK_ROUTER_URL", url: "http:admin:" + password + "@router:8000"},
		{name: "opaque Redis URL", env: "MEMHOOK_REDIS_URL", url: "redis:" + password + "@cache:6380"},
		{name: "Redis URL with a fragment", env: "MEMHOOK_REDIS_URL", url: "redis://cache:6380/x#" + password},
		{name: "Redis password as the db", env: "MEMHOOK_REDIS_URL", url: "redis://cache:6380/" + password},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := seedEnv()
			env["MEM0_WEBHOOK_TOKEN"] = token
			env["MEM0_WEBHOOK_SECRET"] = secret
			env["MEMHOOK_INGEST_TOKEN"] = ingest
			env["MEM0_WEBHOOK_TIMEOUT"] = "abc"
			env[tt.env] = tt.url
			_, err := bus.ConfigFromLookup(mapLookup(env))
			if err == nil {
				t.Fatalf("%s=%q accepted", tt.env, tt.url)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.env) {
				t.Errorf("error does not name %s: %q", tt.env, msg)
			}
			for _, s := range []string{password, query, token, secret, ingest} {
				if strings.Contains(msg, s) {
					t.Errorf("error shows %q: %q", s, msg)
				}
			}
		})
	}
}

func TestConfigFromLookupNeverShowsSecrets(t *testing.T) {
	const token, secret = "tok-ENV-SECRET", "sec-ENV-SECRET"
	env := map[string]string{
		"MEM0_WEBHOOK_TOKEN":           token,
		"MEM0_WEBHOOK_SECRET":          secret,
		"MEM0_WEBHOOK_URL":             "ftp://x",
		"MEM0_WEBHOOK_TIMEOUT":         "-1",
		"MEM0_WEBHOOK_RETRY_COUNT":     "-1",
		"MEM0_WEBHOOK_RETRY_DELAY":     "x",
		"MEM0_WEBHOOK_EVENTS":          "a,b",
		"MEMHOOK_TRANSPORT":            "kafka",
		"MEMHOOK_QUEUE_CAPACITY":       "-5",
		"MEMHOOK_CONCURRENCY":          "-5",
		"MEMHOOK_MAX_RETRY_AFTER":      "-5",
		"MEMHOOK_LEGACY_SECRET_HEADER": "maybe",
	}
	_, err := bus.ConfigFromLookup(mapLookup(env))
	if err == nil {
		t.Fatal("bad values accepted")
	}
	if msg := err.Error(); strings.Contains(msg, token) || strings.Contains(msg, secret) {
		t.Errorf("error shows a secret: %q", msg)
	}
	// A value left after the secrets were read is also not echoed by
	// Validate.
	c := seedConfig()
	c.Token, c.Secret, c.IngestToken = token, secret, "ingest-ENV-SECRET"
	c.Timeout, c.Transport, c.WebhookURL = -time.Second, "kafka", "ftp://x"
	err = c.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad values")
	}
	if msg := err.Error(); strings.Contains(msg, token) || strings.Contains(msg, secret) || strings.Contains(msg, "ingest-ENV-SECRET") {
		t.Errorf("Validate error shows a secret: %q", msg)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name      string
		change    func(*bus.Config)
		wantEnv   string // "" when the config stays valid
		wantField string
		wantValue string
	}{
		{name: "valid", change: func(*bus.Config) {}},
		{name: "no URL", change: func(c *bus.Config) { c.WebhookURL = "" }},
		{name: "zero timeout is the default", change: func(c *bus.Config) { c.Timeout = 0 }},
		{name: "retries disabled", change: func(c *bus.Config) { c.RetryCount = bus.Disabled }},
		{name: "no events", change: func(c *bus.Config) { c.Events = "none" }},
		{name: "event list", change: func(c *bus.Config) { c.Events = "memory_added, graph_built" }},
		{name: "http transport", change: func(c *bus.Config) { c.Transport = "http" }},
		{name: "ftp URL", change: func(c *bus.Config) { c.WebhookURL = "ftp://x" },
			wantEnv: "MEM0_WEBHOOK_URL", wantField: "WebhookURL", wantValue: "ftp://x"},
		{name: "negative timeout", change: func(c *bus.Config) { c.Timeout = -time.Second },
			wantEnv: "MEM0_WEBHOOK_TIMEOUT", wantField: "Timeout", wantValue: "-1s"},
		{name: "retry count below Disabled", change: func(c *bus.Config) { c.RetryCount = -2 },
			wantEnv: "MEM0_WEBHOOK_RETRY_COUNT", wantField: "RetryCount", wantValue: "-2"},
		{name: "negative retry delay", change: func(c *bus.Config) { c.RetryDelay = -250 * time.Millisecond },
			wantEnv: "MEM0_WEBHOOK_RETRY_DELAY", wantField: "RetryDelay", wantValue: "-250ms"},
		{name: "negative max Retry-After", change: func(c *bus.Config) { c.MaxRetryAfter = -time.Minute },
			wantEnv: "MEMHOOK_MAX_RETRY_AFTER", wantField: "MaxRetryAfter", wantValue: "-1m0s"},
		{name: "unknown event", change: func(c *bus.Config) { c.Events = "memory_exploded" },
			wantEnv: "MEM0_WEBHOOK_EVENTS", wantField: "Events", wantValue: "memory_exploded"},
		{name: "empty event list", change: func(c *bus.Config) { c.Events = "," },
			wantEnv: "MEM0_WEBHOOK_EVENTS", wantField: "Events", wantValue: `","`},
		{name: "kafka transport", change: func(c *bus.Config) { c.Transport = "kafka" },
			wantEnv: "MEMHOOK_TRANSPORT", wantField: "Transport", wantValue: "kafka"},
		{name: "negative queue capacity", change: func(c *bus.Config) { c.QueueCapacity = -5 },
			wantEnv: "MEMHOOK_QUEUE_CAPACITY", wantField: "QueueCapacity", wantValue: "-5"},
		{name: "negative concurrency", change: func(c *bus.Config) { c.Concurrency = -1 },
			wantEnv: "MEMHOOK_CONCURRENCY", wantField: "Concurrency", wantValue: "-1"},
		{name: "ftp router URL", change: func(c *bus.Config) { c.RouterURL = "ftp://router" },
			wantEnv: "MEMHOOK_ROUTER_URL", wantField: "RouterURL", wantValue: "ftp://router"},
		{name: "opaque URL", change: func(c *bus.Config) { c.WebhookURL = "https:pw@host" },
			wantEnv: "MEM0_WEBHOOK_URL", wantField: "WebhookURL", wantValue: "https:REDACTED"},
		{name: "opaque router URL", change: func(c *bus.Config) { c.RouterURL = "http:pw@router" },
			wantEnv: "MEMHOOK_ROUTER_URL", wantField: "RouterURL", wantValue: "http:REDACTED"},
		{name: "opaque Redis URL", change: func(c *bus.Config) { c.Transport, c.RedisURL = "redis", "redis:pw@host:1" },
			wantEnv: "MEMHOOK_REDIS_URL", wantField: "RedisURL", wantValue: "redis:REDACTED"},
		{name: "opaque Redis URL, transport memory", change: func(c *bus.Config) { c.RedisURL = "redis:pw@host:1" },
			wantEnv: "MEMHOOK_REDIS_URL", wantField: "RedisURL", wantValue: "redis:REDACTED"},
		{name: "retry schedule", change: func(c *bus.Config) { c.RetrySchedule = []time.Duration{time.Second, time.Hour} }},
		{name: "retry schedule with retries disabled", change: func(c *bus.Config) {
			c.RetryCount, c.RetrySchedule = bus.Disabled, []time.Duration{time.Second}
		}},
		{name: "zero entry in the retry schedule", change: func(c *bus.Config) { c.RetrySchedule = []time.Duration{time.Second, 0} },
			wantEnv: "MEMHOOK_RETRY_SCHEDULE", wantField: "RetrySchedule", wantValue: "entry 2 must be more than 0, got 0s"},
		{name: "negative entry in the retry schedule", change: func(c *bus.Config) { c.RetrySchedule = []time.Duration{-time.Minute} },
			wantEnv: "MEMHOOK_RETRY_SCHEDULE", wantField: "RetrySchedule", wantValue: "entry 1 must be more than 0, got -1m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedConfig()
			tt.change(&c)
			err := c.Validate()
			if tt.wantEnv == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, s := range []string{tt.wantEnv, tt.wantField, tt.wantValue} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate() = %q, does not name %s", err, s)
				}
			}
			if n := len(problems(err)); n != 1 {
				t.Errorf("one bad field reported as %d problems: %q", n, err)
			}
		})
	}
}

func TestConfigValidateZeroIsValid(t *testing.T) {
	if err := (bus.Config{}).Validate(); err != nil {
		t.Errorf("the zero Config (all defaults) is invalid: %v", err)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := seedConfig()
	c.Timeout, c.RetryCount, c.Events, c.Transport = -time.Second, -7, "bogus", "kafka"
	err := c.Validate()
	if n := len(problems(err)); n != 4 {
		t.Fatalf("4 bad fields reported as %d problems: %v", n, err)
	}
	for _, env := range []string{"MEM0_WEBHOOK_TIMEOUT", "MEM0_WEBHOOK_RETRY_COUNT", "MEM0_WEBHOOK_EVENTS", "MEMHOOK_TRANSPORT"} {
		if !strings.Contains(err.Error(), env) {
			t.Errorf("error does not name %s: %v", env, err)
		}
	}
}

// MEMHOOK_RETRY_SCHEDULE replaces the seed's MEM0_WEBHOOK_RETRY_COUNT and
// MEM0_WEBHOOK_RETRY_DELAY: set, it is the schedule in effect whatever they
// say (even a count of 0); unset, they make it.
func TestRetryScheduleReplacesCountAndDelay(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []time.Duration
	}{
		{name: "the seed's defaults", env: map[string]string{},
			want: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
		{name: "count and delay", env: map[string]string{"MEM0_WEBHOOK_RETRY_COUNT": "4", "MEM0_WEBHOOK_RETRY_DELAY": "0.5"},
			want: []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}},
		{name: "count 0", env: map[string]string{"MEM0_WEBHOOK_RETRY_COUNT": "0"},
			want: []time.Duration{}},
		{name: "schedule alone", env: map[string]string{"MEMHOOK_RETRY_SCHEDULE": "5s,5m"},
			want: []time.Duration{5 * time.Second, 5 * time.Minute}},
		{name: "schedule over count and delay", env: map[string]string{
			"MEM0_WEBHOOK_RETRY_COUNT": "5", "MEM0_WEBHOOK_RETRY_DELAY": "2", "MEMHOOK_RETRY_SCHEDULE": "10s,20s",
		}, want: []time.Duration{10 * time.Second, 20 * time.Second}},
		{name: "schedule over count 0", env: map[string]string{"MEM0_WEBHOOK_RETRY_COUNT": "0", "MEMHOOK_RETRY_SCHEDULE": "3s"},
			want: []time.Duration{3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := seedEnv()
			delete(env, "MEM0_WEBHOOK_RETRY_COUNT")
			delete(env, "MEM0_WEBHOOK_RETRY_DELAY")
			maps.Copy(env, tt.env)
			c, err := bus.ConfigFromLookup(mapLookup(env))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.RetryDelays(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("retry delays %v, want %v", got, tt.want)
			}
		})
	}
}
