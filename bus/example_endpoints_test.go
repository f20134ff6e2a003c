package bus_test

import (
	"errors"
	"fmt"

	"github.com/memhook/memhook/bus"
)

func ExampleParseEndpoints() {
	file := []byte(`endpoints:
  - name: crm
    url: https://crm.example.com/hooks/memory
    events: [preference_stored, correction_stored]
    token: ${CRM_TOKEN}
    secret: ${CRM_SECRET}
    timeout: 15s
    retry_schedule: [5s, 5m, 30m]
    rate_limit: 50/s
    headers: {X-Tenant: acme}
  - name: alerts
    url: https://alerts.example.com/memhook
    events: memory_error
`)
	env := map[string]string{"CRM_TOKEN": "crm-token", "CRM_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }

	eps, err := bus.ParseEndpoints("endpoints.yaml", file, lookup)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range eps {
		fmt.Printf("%s → %s\n", e.Name, e.URL)
		fmt.Printf("  events %q, token set %t, signed %t\n", e.Events, e.Token != "", e.Secret != "")
		fmt.Printf("  timeout %v, retries %v, rate limit %q, headers %v\n", e.Timeout, e.RetrySchedule, e.RateLimit, e.Headers)
	}
	// Output:
	// crm → https://crm.example.com/hooks/memory
	//   events "preference_stored,correction_stored", token set true, signed true
	//   timeout 15s, retries [5s 5m0s 30m0s], rate limit "50/s", headers map[X-Tenant:acme]
	// alerts → https://alerts.example.com/memhook
	//   events "memory_error", token set false, signed false
	//   timeout 0s, retries [], rate limit "", headers map[]
}

// Every problem is reported at once, each naming the file, the line, the
// endpoint and the key; a value that comes from a variable is not shown.
func ExampleParseEndpoints_errors() {
	file := []byte(`endpoints:
  - name: crm
    url: ${CRM_URL}
    secret: ${CRM_SECRET}
    timeout: soon
    retries: 3
  - name: crm
    url: https://crm.example.com/other
`)
	env := map[string]string{"CRM_URL": "ftp://crm.example.com/"}
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }

	_, err := bus.ParseEndpoints("endpoints.yaml", file, lookup)
	fmt.Println(err)
	var fe *bus.EndpointsFileError
	var ee *bus.EndpointError
	if errors.As(err, &fe) && errors.As(fe, &ee) {
		fmt.Printf("first: line %d, endpoint %s, key %s\n", fe.Line, ee.Endpoint, ee.Key)
	}
	// Output:
	// endpoints.yaml:3: endpoint crm: url: the value of ${CRM_URL} (not shown, it comes from a variable) is not an http or https URL (http[s]://host[:port]/path)
	// endpoints.yaml:4: endpoint crm: secret: ${CRM_SECRET} is not set
	// endpoints.yaml:5: endpoint crm: timeout: "soon" is not a Go duration such as 15s or a number of seconds
	// endpoints.yaml:6: endpoint crm: retries: unknown key (the keys are name, url, events, token, secret, legacy_secret_header, timeout, retry_schedule, rate_limit, ordering, headers)
	// endpoints.yaml:7: endpoint crm: name: already the name of the endpoint at line 2
	// first: line 3, endpoint crm, key url
}
