package bus_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memhook/memhook/bus"
)

// endpointsFile is a valid endpoints file; the cases below change one
// thing each. Its lines, for the expected errors: 2 name crm, 3 url,
// 4 events, 5 token, 6 secret, 7 legacy_secret_header, 8 timeout,
// 9 retry_schedule, 10 rate_limit, 11 headers, 12 name alerts, 13 url.
const endpointsFile = `endpoints:
  - name: crm
    url: https://crm.example.com/hooks/memory
    events: [preference_stored, correction_stored]
    token: ${CRM_TOKEN}
    secret: ${CRM_SECRET}
    legacy_secret_header: false
    timeout: 15s
    retry_schedule: [5s, 5m, 30m]
    rate_limit: 50/s
    headers: {X-Tenant: acme}
  - name: alerts
    url: https://alerts.example.com/memhook
`

const (
	crmToken = "tok-5f1e-never-shown"
	// alertsURL is a variable's value that is not a valid URL.
	alertsURL = "ftp://hidden-host.example/never-shown"
)

var crmSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("crm signing key never shown"))

// endpointsEnv is the environment endpointsFile needs.
func endpointsEnv() map[string]string {
	return map[string]string{"CRM_TOKEN": crmToken, "CRM_SECRET": crmSecret}
}

// endpointsWant is what endpointsFile reads as.
func endpointsWant() []bus.Endpoint {
	return []bus.Endpoint{
		{
			Name:          "crm",
			URL:           "https://crm.example.com/hooks/memory",
			Events:        "preference_stored,correction_stored",
			Token:         crmToken,
			Secret:        crmSecret,
			Timeout:       15 * time.Second,
			RetrySchedule: []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute},
			RateLimit:     bus.RateLimit{Events: 50, Per: time.Second},
			Headers:       map[string]string{"X-Tenant": "acme"},
		},
		{Name: "alerts", URL: "https://alerts.example.com/memhook"},
	}
}

// edit returns endpointsFile with each pair old → new replaced, failing
// t unless each old occurs exactly once.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	s := endpointsFile
	for i := 0; i+1 < len(pairs); i += 2 {
		if n := strings.Count(s, pairs[i]); n != 1 {
			t.Fatalf("edit: %q occurs %d times in the file", pairs[i], n)
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

// fileErrors splits err into its *bus.EndpointsFileError.
func fileErrors(t *testing.T, err error) []*bus.EndpointsFileError {
	t.Helper()
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	} else if err != nil {
		all = []error{err}
	}
	var out []*bus.EndpointsFileError
	for _, e := range all {
		var fe *bus.EndpointsFileError
		if !errors.As(e, &fe) {
			t.Fatalf("%v (%T) is not an *EndpointsFileError", e, e)
		}
		out = append(out, fe)
	}
	return out
}

func TestParseEndpointsReadsAValidFile(t *testing.T) {
	eps, err := bus.ParseEndpoints("endpoints.yaml", []byte(endpointsFile), mapLookup(endpointsEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if want := endpointsWant(); !reflect.DeepEqual(eps, want) {
		t.Fatalf("got  %+v\nwant %+v", eps, want)
	}
	if err := (bus.Config{Endpoints: eps}).Validate(); err != nil {
		t.Fatalf("the endpoints read do not pass Config.Validate: %v", err)
	}
}

// The example file (the one the README shows) reads as it says.
func TestLoadEndpointsReadsTheExampleFile(t *testing.T) {
	env := endpointsEnv()
	env["ALERTS_SECRET_NEW"] = "new-raw-secret"
	env["ALERTS_SECRET_OLD"] = "whsec_" + base64.StdEncoding.EncodeToString([]byte("old"))
	eps, err := bus.LoadEndpoints(filepath.Join("testdata", "endpoints.yaml"), mapLookup(env))
	if err != nil {
		t.Fatal(err)
	}
	want := endpointsWant()
	want[0].RetrySchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute,
		2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	want[1].Events = "memory_error"
	want[1].Secret = env["ALERTS_SECRET_NEW"] + " " + env["ALERTS_SECRET_OLD"]
	if !reflect.DeepEqual(eps, want) {
		t.Fatalf("got  %+v\nwant %+v", eps, want)
	}
}

func TestLoadEndpointsNamesThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eps.yaml")
	if err := os.WriteFile(path, []byte(edit(t, "rate_limit: 50/s", "rate_limit: 50")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := bus.LoadEndpoints(path, mapLookup(endpointsEnv()))
	if err == nil || !strings.HasPrefix(err.Error(), path+":10: endpoint crm: rate_limit: ") {
		t.Fatalf("got %v, want an error starting %s:10: endpoint crm: rate_limit:", err, path)
	}

	_, err = bus.LoadEndpoints(filepath.Join(t.TempDir(), "missing.yaml"), nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing file: got %v, want fs.ErrNotExist", err)
	}
}

// Each case changes one thing of a valid file and gets the value it says.
func TestParseEndpointsValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		env  map[string]string // added to endpointsEnv
		want func(eps []bus.Endpoint)
	}{
		{"events omitted is all", edit(t, "    events: [preference_stored, correction_stored]\n", ""), nil,
			func(eps []bus.Endpoint) { eps[0].Events = "" }},
		{"events as the seed's string", edit(t, "[preference_stored, correction_stored]", "preference_stored, memory_error"), nil,
			func(eps []bus.Endpoint) { eps[0].Events = "preference_stored, memory_error" }},
		{"events all", edit(t, "[preference_stored, correction_stored]", "all"), nil,
			func(eps []bus.Endpoint) { eps[0].Events = "all" }},
		{"events none", edit(t, "[preference_stored, correction_stored]", "none"), nil,
			func(eps []bus.Endpoint) { eps[0].Events = "none" }},
		{"an empty events list is none", edit(t, "[preference_stored, correction_stored]", "[]"), nil,
			func(eps []bus.Endpoint) { eps[0].Events = "none" }},
		{"events from a quoted variable in a flow list", edit(t, "[preference_stored, correction_stored]", `["${EV}", memory_error]`),
			map[string]string{"EV": "graph_built"},
			func(eps []bus.Endpoint) { eps[0].Events = "graph_built,memory_error" }},
		{"events as a block list", edit(t, "[preference_stored, correction_stored]", "\n      - memory_added\n      - memory_error"), nil,
			func(eps []bus.Endpoint) { eps[0].Events = "memory_added,memory_error" }},
		{"several secrets in a list", edit(t, "secret: ${CRM_SECRET}", `secret: ["${CRM_SECRET}", old-raw-secret]`), nil,
			func(eps []bus.Endpoint) { eps[0].Secret = crmSecret + " old-raw-secret" }},
		{"several secrets in a string", edit(t, "secret: ${CRM_SECRET}", `secret: ${CRM_SECRET} old-raw-secret`), nil,
			func(eps []bus.Endpoint) { eps[0].Secret = crmSecret + " old-raw-secret" }},
		{"a variable's value is trimmed", edit(t), map[string]string{"CRM_TOKEN": "  " + crmToken + "\n"},
			func(eps []bus.Endpoint) {}},
		{"a variable inside a value", edit(t, "https://crm.example.com/hooks/memory", "https://${CRM_HOST}/hooks/memory"),
			map[string]string{"CRM_HOST": "crm.example.com"}, func(eps []bus.Endpoint) {}},
		{"$${ is a literal ${", edit(t, "{X-Tenant: acme}", `{X-Tenant: "$${acme}"}`), nil,
			func(eps []bus.Endpoint) { eps[0].Headers["X-Tenant"] = "${acme}" }},
		{"a lone $ is kept", edit(t, "/hooks/memory", "/hooks/$memory"), nil,
			func(eps []bus.Endpoint) { eps[0].URL = "https://crm.example.com/hooks/$memory" }},
		{"an empty token is none", edit(t, "token: ${CRM_TOKEN}", "token:"), nil,
			func(eps []bus.Endpoint) { eps[0].Token = "" }},
		{"legacy_secret_header true", edit(t, "legacy_secret_header: false", "legacy_secret_header: true"), nil,
			func(eps []bus.Endpoint) { eps[0].LegacySecretHeader = true }},
		{"legacy_secret_header from a variable", edit(t, "legacy_secret_header: false", "legacy_secret_header: ${LEGACY}"),
			map[string]string{"LEGACY": "true"}, func(eps []bus.Endpoint) { eps[0].LegacySecretHeader = true }},
		{"timeout in seconds, as MEM0_WEBHOOK_TIMEOUT", edit(t, "timeout: 15s", "timeout: 1.5"), nil,
			func(eps []bus.Endpoint) { eps[0].Timeout = 1500 * time.Millisecond }},
		{"retry_schedule as a comma string", edit(t, "[5s, 5m, 30m]", "5s, 1m"), nil,
			func(eps []bus.Endpoint) { eps[0].RetrySchedule = []time.Duration{5 * time.Second, time.Minute} }},
		{"retry_schedule in seconds", edit(t, "[5s, 5m, 30m]", "[5, 60]"), nil,
			func(eps []bus.Endpoint) { eps[0].RetrySchedule = []time.Duration{5 * time.Second, time.Minute} }},
		{"rate_limit per a duration", edit(t, "50/s", "100/10s"), nil,
			func(eps []bus.Endpoint) { eps[0].RateLimit = bus.RateLimit{Events: 100, Per: 10 * time.Second} }},
		{"headers as a block mapping", edit(t, "{X-Tenant: acme}", "\n      X-Tenant: acme\n      X-Region: eu"), nil,
			func(eps []bus.Endpoint) { eps[0].Headers["X-Region"] = "eu" }},
		{"a header value from a quoted variable", edit(t, "{X-Tenant: acme}", `{X-Tenant: "${TENANT}"}`),
			map[string]string{"TENANT": "acme"}, func(eps []bus.Endpoint) {}},
		{"!!str forces a string", edit(t, "timeout: 15s", "timeout: !!str 15"), nil,
			func(eps []bus.Endpoint) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := endpointsEnv()
			maps.Copy(env, tc.env)
			eps, err := bus.ParseEndpoints("endpoints.yaml", []byte(tc.file), mapLookup(env))
			if err != nil {
				t.Fatal(err)
			}
			want := endpointsWant()
			tc.want(want)
			if !reflect.DeepEqual(eps, want) {
				t.Fatalf("got  %+v\nwant %+v", eps, want)
			}
		})
	}
}

func TestParseEndpointsWithoutEndpoints(t *testing.T) {
	for _, file := range []string{"", "\n", "# nothing yet\n", "---\n", "~\n", "endpoints:\n", "endpoints: []\n", "endpoints: ~\n"} {
		eps, err := bus.ParseEndpoints("endpoints.yaml", []byte(file), mapLookup(nil))
		if err != nil || len(eps) != 0 {
			t.Errorf("%q: got %v, %v; want no endpoint and no error", file, eps, err)
		}
	}
}

// Each case breaks one thing of a valid file: start-up stops with one
// error naming the file, the line, the endpoint and the key.
func TestParseEndpointsRefuses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		file     string
		env      map[string]string // added to endpointsEnv; "" values are set empty
		unset    string            // removed from endpointsEnv
		line     int
		endpoint string // "" for a problem of the whole file
		key      string
		problem  string // in the message
	}{
		{name: "an unknown key", file: edit(t, "rate_limit: 50/s", "rate_limt: 50/s"),
			line: 10, endpoint: "crm", key: "rate_limt", problem: "unknown key (the keys are name, url,"},
		{name: "an unknown ordering", file: edit(t, "rate_limit: 50/s", "rate_limit: 50/s\n    ordering: fifo"),
			line: 11, endpoint: "crm", key: "ordering", problem: `want none or user, got "fifo"`},
		{name: "an unknown top-level key", file: endpointsFile + "version: 2\n",
			line: 14, problem: "version: unknown key"},
		{name: "an unknown key that may be a value is not shown", file: edit(t, "    timeout: 15s\n", "    timeout: 15s\n    s3cr3t=value: x\n"),
			line: 9, endpoint: "crm", key: "key", problem: "unknown key, not shown"},
		{name: "a key given twice", file: edit(t, "    timeout: 15s\n", "    timeout: 15s\n    timeout: 20s\n"),
			line: 9, endpoint: "crm", key: "timeout", problem: "given twice (first at line 8)"},
		{name: "endpoints given twice", file: endpointsFile + "endpoints: []\n",
			line: 14, problem: "endpoints: given twice (first at line 1)"},
		{name: "a duplicate name", file: edit(t, "name: alerts", "name: crm"),
			line: 12, endpoint: "crm", key: "name", problem: "already the name of the endpoint at line 2"},
		{name: "the default name", file: edit(t, "name: alerts", "name: default"),
			line: 12, endpoint: "default", key: "name", problem: "default is the endpoint of MEM0_WEBHOOK_URL"},
		{name: "a bad name", file: edit(t, "name: alerts", "name: Alerts"),
			line: 12, endpoint: "#2", key: "name", problem: `"Alerts" must be 1 to 64 of a-z, 0-9, _ and -`},
		{name: "a name that is a list", file: edit(t, "name: alerts", "name: [alerts]"),
			line: 12, endpoint: "#2", key: "name", problem: "want a string, got a list"},
		{name: "no name", file: edit(t, "  - name: alerts\n    url:", "  - url:"),
			line: 12, endpoint: "#2", key: "name", problem: "required"},
		{name: "no url", file: edit(t, "    url: https://alerts.example.com/memhook\n", "    events: all\n"),
			line: 12, endpoint: "alerts", key: "url", problem: "required"},
		{name: "a bad url", file: edit(t, "https://alerts.example.com", "ftp://alerts.example.com"),
			line: 13, endpoint: "alerts", key: "url", problem: "scheme must be http or https"},
		{name: "a url from an unset variable", file: edit(t, "https://alerts.example.com/memhook", "${ALERTS_URL}"),
			line: 13, endpoint: "alerts", key: "url", problem: "${ALERTS_URL} is not set"},
		{name: "a bad url from a variable", file: edit(t, "https://alerts.example.com/memhook", "${ALERTS_URL}"),
			env:  map[string]string{"ALERTS_URL": alertsURL},
			line: 13, endpoint: "alerts", key: "url", problem: "the value of ${ALERTS_URL} (not shown, it comes from a variable) is not an http or https URL"},
		{name: "an unset token", unset: "CRM_TOKEN", file: endpointsFile,
			line: 5, endpoint: "crm", key: "token", problem: "${CRM_TOKEN} is not set"},
		{name: "an empty secret variable", env: map[string]string{"CRM_SECRET": " "}, file: endpointsFile,
			line: 6, endpoint: "crm", key: "secret", problem: "${CRM_SECRET} is empty"},
		{name: "a ${ that is not ${NAME}", file: edit(t, "${CRM_TOKEN}", "${CRM-TOKEN}"),
			line: 5, endpoint: "crm", key: "token", problem: "the ${ at character 1 does not start ${NAME}"},
		{name: "an unclosed ${", file: edit(t, "${CRM_TOKEN}", "tok${CRM_TOKEN"),
			line: 5, endpoint: "crm", key: "token", problem: "the ${ at character 4 does not start ${NAME}"},
		{name: "a token with a line break", env: map[string]string{"CRM_TOKEN": "tok\nX-Injected: 1"}, file: endpointsFile,
			line: 5, endpoint: "crm", key: "token", problem: "holds a line break or another control character"},
		{name: "a bad secret", env: map[string]string{"CRM_SECRET": "whsec_!!!"}, file: endpointsFile,
			line: 6, endpoint: "crm", key: "secret", problem: "not standard base64"},
		{name: "a bad secret in a list", file: edit(t, "secret: ${CRM_SECRET}", "secret:\n      - ${CRM_SECRET}\n      - whsec_"),
			line: 8, endpoint: "crm", key: "secret", problem: "entry 2: "},
		{name: "an empty secret list", file: edit(t, "secret: ${CRM_SECRET}", "secret: []"),
			line: 6, endpoint: "crm", key: "secret", problem: "an empty list"},
		{name: "an unknown event in a list", file: edit(t, "correction_stored]", "corection_stored]"),
			line: 4, endpoint: "crm", key: "events", problem: `entry 2: "corection_stored" is not an event type`},
		{name: "an unknown event in a string", file: edit(t, "[preference_stored, correction_stored]", "preference_stored,nope"),
			line: 4, endpoint: "crm", key: "events", problem: `"nope"`},
		{name: "events from a variable naming an unknown event", file: edit(t, "[preference_stored, correction_stored]", "${EV}"),
			env:  map[string]string{"EV": "hidden_event"},
			line: 4, endpoint: "crm", key: "events", problem: "the value of ${EV} (not shown, it comes from a variable) is not all, none or a comma list of event types"},
		{name: "events as a mapping", file: edit(t, "[preference_stored, correction_stored]", "{preference_stored: true}"),
			line: 4, endpoint: "crm", key: "events", problem: "want a string or a list of strings, got a mapping"},
		{name: "an unquoted variable in a flow list", file: edit(t, "[preference_stored, correction_stored]", "[${EV}]"),
			line: 4, problem: `must be quoted: "${NAME}"`},
		{name: "legacy_secret_header not a bool", file: edit(t, "legacy_secret_header: false", "legacy_secret_header: maybe"),
			line: 7, endpoint: "crm", key: "legacy_secret_header", problem: `"maybe" is not true or false`},
		{name: "a bad timeout", file: edit(t, "timeout: 15s", "timeout: 15 parsecs"),
			line: 8, endpoint: "crm", key: "timeout", problem: `"15 parsecs" is not a Go duration`},
		{name: "a zero timeout", file: edit(t, "timeout: 15s", "timeout: 0"),
			line: 8, endpoint: "crm", key: "timeout", problem: `"0" must be more than 0`},
		{name: "a bad retry entry", file: edit(t, "[5s, 5m, 30m]", "[5s, -5m, 30m]"),
			line: 9, endpoint: "crm", key: "retry_schedule", problem: `entry 2: "-5m" must be more than 0`},
		{name: "a bad retry entry in a string", file: edit(t, "[5s, 5m, 30m]", "5s, soon"),
			line: 9, endpoint: "crm", key: "retry_schedule", problem: `entry 2: "soon" is not a Go duration`},
		{name: "an empty retry list", file: edit(t, "[5s, 5m, 30m]", "[]"),
			line: 9, endpoint: "crm", key: "retry_schedule", problem: "an empty list; leave the key out"},
		{name: "a retry entry that is a list", file: edit(t, "[5s, 5m, 30m]", "[5s, [5m]]"),
			line: 9, endpoint: "crm", key: "retry_schedule", problem: "entry 2: want a string, got a list"},
		{name: "a bad rate limit", file: edit(t, "50/s", "50/fortnight"),
			line: 10, endpoint: "crm", key: "rate_limit", problem: `"fortnight" is not s, m, h or a duration`},
		{name: "a reserved header", file: edit(t, "{X-Tenant: acme}", "{authorization: Basic x}"),
			line: 11, endpoint: "crm", key: "headers", problem: "Authorization is set by memhook"},
		{name: "a webhook- header", file: edit(t, "{X-Tenant: acme}", "{webhook-id: x}"),
			line: 11, endpoint: "crm", key: "headers", problem: "Webhook-Id is set by memhook"},
		{name: "a bad header name", file: edit(t, "{X-Tenant: acme}", `{"X Tenant": acme}`),
			line: 11, endpoint: "crm", key: "headers", problem: `"X Tenant" is not a header name`},
		{name: "a header given twice", file: edit(t, "{X-Tenant: acme}", "\n      X-Tenant: a\n      x-tenant: b"),
			line: 13, endpoint: "crm", key: "headers", problem: "X-Tenant given twice (first at line 12)"},
		{name: "headers as a list", file: edit(t, "{X-Tenant: acme}", "[X-Tenant]"),
			line: 11, endpoint: "crm", key: "headers", problem: "want a mapping of header names to values, got a list"},
		{name: "a header value that is a mapping", file: edit(t, "{X-Tenant: acme}", "{X-Tenant: {a: b}}"),
			line: 11, endpoint: "crm", key: "headers", problem: "X-Tenant: want a string, got a mapping"},
		{name: "an alias", file: edit(t, "url: https://crm.example.com/hooks/memory", "url: &u https://crm.example.com/hooks/memory",
			"url: https://alerts.example.com/memhook", "url: *u"),
			line: 13, endpoint: "alerts", key: "url", problem: "aliases (*u) are not supported"},
		{name: "a merge key", file: edit(t, "    timeout: 15s\n", "    <<: {timeout: 15s}\n"),
			line: 8, endpoint: "crm", key: "key", problem: "merge keys (<<) are not supported"},
		{name: "a tag", file: edit(t, "timeout: 15s", "timeout: !!binary MTVz"),
			line: 8, endpoint: "crm", key: "timeout", problem: "the YAML tag !!binary is not supported"},
		{name: "an endpoint that is not a mapping", file: edit(t, "  - name: alerts\n    url: https://alerts.example.com/memhook\n", "  - alerts\n"),
			line: 12, endpoint: "#2", key: "endpoint", problem: "want a mapping of name, url, events, token, secret, legacy_secret_header, timeout, retry_schedule, rate_limit, ordering, headers, got a single value"},
		{name: "endpoints not a list", file: "endpoints:\n  crm: {url: https://crm.example.com}\n",
			line: 2, problem: "endpoints: want a list of endpoints, got a mapping"},
		{name: "a file that is a list", file: "- name: crm\n",
			line: 1, problem: "want a mapping holding the key endpoints, got a list"},
		{name: "bad YAML", file: edit(t, "url: https://alerts.example.com/memhook", "url: [https://alerts.example.com/memhook"),
			line: 13, problem: "not valid YAML: "},
		{name: "two documents", file: endpointsFile + "---\nendpoints: []\n",
			line: 14, problem: "a second YAML document (---) starts here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := endpointsEnv()
			maps.Copy(env, tc.env)
			delete(env, tc.unset)
			eps, err := bus.ParseEndpoints("endpoints.yaml", []byte(tc.file), mapLookup(env))
			if err == nil {
				t.Fatalf("no error; read %+v", eps)
			}
			if eps != nil {
				t.Errorf("endpoints %+v returned with the error", eps)
			}
			errs := fileErrors(t, err)
			if len(errs) != 1 {
				t.Fatalf("%d errors, want 1:\n%v", len(errs), err)
			}
			fe := errs[0]
			if fe.File != "endpoints.yaml" || fe.Line != tc.line {
				t.Errorf("at %s:%d, want endpoints.yaml:%d: %v", fe.File, fe.Line, tc.line, err)
			}
			var ee *bus.EndpointError
			switch {
			case tc.endpoint == "" && errors.As(fe, &ee):
				t.Errorf("a problem of the file, got one of endpoint %s, key %s: %v", ee.Endpoint, ee.Key, err)
			case tc.endpoint != "" && !errors.As(fe, &ee):
				t.Errorf("not an *EndpointError: %v", err)
			case tc.endpoint != "" && (ee.Endpoint != tc.endpoint || ee.Key != tc.key):
				t.Errorf("endpoint %q key %q, want endpoint %q key %q: %v", ee.Endpoint, ee.Key, tc.endpoint, tc.key, err)
			}
			if !strings.Contains(err.Error(), tc.problem) {
				t.Errorf("%q does not say %q", err, tc.problem)
			}
			if tc.endpoint != "" {
				prefix := "endpoints.yaml:" + strconv.Itoa(tc.line) + ": endpoint " + tc.endpoint + ": " + tc.key + ": "
				if !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("%q does not start with %q", err, prefix)
				}
			}
			for _, v := range env {
				if len(v) > 3 && strings.Contains(err.Error(), strings.TrimSpace(v)) {
					t.Errorf("%q shows the value of a variable", err)
				}
			}
		})
	}
}

// Every problem is reported at once, in line order.
func TestParseEndpointsReportsEveryProblemAtOnce(t *testing.T) {
	file := edit(t,
		"${CRM_TOKEN}", "${NO_TOKEN}",
		"timeout: 15s", "timeout: soon",
		"{X-Tenant: acme}", "{Content-Type: text/plain}",
		"name: alerts", "name: crm",
		"https://alerts.example.com", "alerts.example.com",
	) + "  - name: third\n    url: https://third.example.com\n    retries: 3\n"
	_, err := bus.ParseEndpoints("endpoints.yaml", []byte(file), mapLookup(endpointsEnv()))
	var got []string
	for _, fe := range fileErrors(t, err) {
		var ee *bus.EndpointError
		if !errors.As(fe, &ee) {
			t.Fatalf("not an *EndpointError: %v", fe)
		}
		got = append(got, fmt.Sprintf("%d %s %s", fe.Line, ee.Endpoint, ee.Key))
	}
	want := []string{"5 crm token", "8 crm timeout", "11 crm headers", "12 crm name", "13 crm url", "16 third retries"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q\n%v", got, want, err)
	}
}

// No error shows a secret's or a token's value, whether written in the
// file or given by a variable, nor any value a variable gave.
func TestParseEndpointsErrorsShowNoSecret(t *testing.T) {
	env := map[string]string{
		"URL":    "gopher://user:pa55word@hidden.example/x",
		"EVENTS": "hidden_event_name",
		"TOKEN":  "hidden-token\x01value",
		"SECRET": "whsec_hidden+secret+value!",
		"TOUT":   "hidden-timeout",
		"RETRY":  "5s, hidden-retry",
		"RATE":   "hidden/rate",
		"LEGACY": "hidden-bool",
		"HEADER": "hidden header\x00value",
	}
	literalSecret := "whsec_LiteralSecretInTheFile!"
	file := `endpoints:
  - name: one
    url: ${URL}
    events: ${EVENTS}
    token: ${TOKEN}
    secret: ${SECRET}
    timeout: ${TOUT}
    retry_schedule: ${RETRY}
    rate_limit: ${RATE}
    legacy_secret_header: ${LEGACY}
    headers: {X-Key: "${HEADER}"}
  - name: two
    url: ${URL}/two
    events: ["${EVENTS}"]
    secret: [` + literalSecret + `, "${SECRET}"]
    retry_schedule: ["${TOUT}"]
`
	_, err := bus.ParseEndpoints("endpoints.yaml", []byte(file), mapLookup(env))
	errs := fileErrors(t, err)
	if len(errs) != 14 {
		t.Fatalf("%d errors, want one per bad value (14):\n%v", len(errs), err)
	}
	msg := err.Error()
	for name, v := range env {
		for _, part := range []string{v, "hidden", "pa55word"} {
			if strings.Contains(msg, part) {
				t.Errorf("the errors show %q of ${%s}:\n%s", part, name, msg)
			}
		}
	}
	if strings.Contains(msg, "LiteralSecret") {
		t.Errorf("the errors show a secret written in the file:\n%s", msg)
	}
	for _, name := range []string{"${URL}", "${EVENTS}", "${TOUT}", "${RETRY}", "${RATE}", "${LEGACY}"} {
		if !strings.Contains(msg, name) {
			t.Errorf("the errors do not name %s:\n%s", name, msg)
		}
	}
}
