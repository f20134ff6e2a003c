package bus

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/verify"
)

// EndpointsFileError is one problem of an endpoints file: the file's name
// as given, the line (1-based; 0 when the YAML parser gives none) and the
// problem. Err is an *EndpointError when the problem belongs to one
// endpoint's key (match it with errors.As), a plain error for the file as
// a whole (YAML syntax, an unknown top-level key). Error never holds a
// secret's or a token's value, nor any value that came from a variable.
type EndpointsFileError struct {
	File string
	Line int
	Err  error
}

// Error implements error: "endpoints.yaml:7: endpoint crm: secret: …".
func (e *EndpointsFileError) Error() string {
	if e.Line <= 0 {
		return e.File + ": " + e.Err.Error()
	}
	return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *EndpointsFileError) Unwrap() error { return e.Err }

// LoadEndpoints reads the endpoints file at path (MEMHOOK_ENDPOINTS_FILE)
// and parses it as ParseEndpoints does, naming path in its errors. An
// unreadable file is the *os.PathError of os.ReadFile.
func LoadEndpoints(path string, lookup func(string) (string, bool)) ([]Endpoint, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseEndpoints(path, data, lookup)
}

// ParseEndpoints reads an endpoints file's content, YAML such as
//
//	endpoints:
//	  - name: crm
//	    url: https://crm.example.com/hooks/memory
//	    events: [preference_stored, correction_stored]
//	    token: ${CRM_TOKEN}
//	    secret: ${CRM_SECRET}
//	    legacy_secret_header: false
//	    timeout: 15s
//	    retry_schedule: [5s, 5m, 30m, 2h, 5h, 10h, 10h]
//	    rate_limit: 50/s
//	    headers: {X-Tenant: acme}
//
// Only name and url are required; each key fills the Endpoint field of
// the same name, with its meaning and default (legacy_secret_header is
// false unless set: only DefaultEndpoint keeps the seed's header). events is a list of event
// types or a string as MEM0_WEBHOOK_EVENTS ("all", "none", a comma list);
// an empty list is "none". secret is a list or a string of secrets
// separated by spaces or commas, as MEM0_WEBHOOK_SECRET. timeout and each
// entry of retry_schedule (a list, or a comma string as
// MEMHOOK_RETRY_SCHEDULE) are a Go duration or a number of seconds
// (ParseSeconds). rate_limit is read by ParseRateLimit. An empty content,
// an empty `endpoints:` or `endpoints: []` holds no endpoint (nil, nil).
//
// In every value except name and the header names, ${NAME} (NAME of
// A-Z, a-z, 0-9 and _, not starting with a digit) is replaced by what
// lookup returns for NAME; nil lookup means os.LookupEnv. A variable that
// is unset or empty is an error naming it. $${ stands for a literal ${;
// any other $ is kept as it is. The replacement happens after the YAML is
// parsed, so a variable's value is never read as YAML, and it is trimmed
// of surrounding white space as ConfigFromLookup trims variables. Inside
// [ ] or { } a ${NAME} must be quoted ("${NAME}"): YAML reads { and } there.
//
// Every problem is reported at once, in line order: errors.Join of
// *EndpointsFileError, each naming the line and, when it is one
// endpoint's, wrapping an *EndpointError with the endpoint (its name, or
// "#n" for the n-th when the name is missing or bad) and the key. They
// cover YAML syntax, unknown keys, a key given twice, values of the wrong
// YAML kind, aliases, merge keys (<<) and tags such as !!binary (not
// supported: each value is written out), unset variables, a bad
// name, URL, events, secret, duration, rate limit or header, a name used
// twice (naming the line of the first) and the reserved name
// DefaultEndpoint: everything Endpoint.Validate and Config.Validate check
// of endpoints. No message holds a secret's or token's value, nor a value
// that came from a variable. On error the endpoints are nil.
func ParseEndpoints(name string, data []byte, lookup func(string) (string, bool)) ([]Endpoint, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	p := &endpointsParser{file: name, data: data, lookup: lookup}
	eps := p.parse()
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, func(a, b *EndpointsFileError) int { return cmp.Compare(a.Line, b.Line) })
		errs := make([]error, len(p.errs))
		for i, e := range p.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	return eps, nil
}

// Keys of an endpoint in the endpoints file, in the order the docs give.
const (
	keyName               = "name"
	keyURL                = "url"
	keyEvents             = "events"
	keyToken              = "token"
	keySecret             = "secret"
	keyLegacySecretHeader = "legacy_secret_header"
	keyTimeout            = "timeout"
	keyRetrySchedule      = "retry_schedule"
	keyRateLimit          = "rate_limit"
	keyOrdering           = "ordering"
	keyHeaders            = "headers"
)

var endpointKeys = []string{keyName, keyURL, keyEvents, keyToken, keySecret, keyLegacySecretHeader,
	keyTimeout, keyRetrySchedule, keyRateLimit, keyOrdering, keyHeaders}

// endpointsParser collects every problem of one file.
type endpointsParser struct {
	file   string
	data   []byte
	lookup func(string) (string, bool)
	errs   []*EndpointsFileError
}

// fileErr records a problem of the file as a whole.
func (p *endpointsParser) fileErr(line int, format string, args ...any) {
	p.errs = append(p.errs, &EndpointsFileError{File: p.file, Line: line, Err: fmt.Errorf(format, args...)})
}

// endpointErr records a problem of key of endpoint label.
func (p *endpointsParser) endpointErr(line int, label, key, format string, args ...any) {
	p.errs = append(p.errs, &EndpointsFileError{File: p.file, Line: line,
		Err: &EndpointError{Endpoint: label, Key: key, Problem: fmt.Sprintf(format, args...)}})
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserProblems are the problems of the YAML parser (as opposed to
// its scanner). yaml.v3 gives their line 0-based (the line of the problem
// or of the start of the list or mapping it is in) and none for the first.
var yamlParserProblems = []string{
	"did not find expected <stream-start>", "did not find expected <document start>",
	"found undefined tag handle", "did not find expected node content",
	"did not find expected '-' indicator", "did not find expected key",
	"did not find expected ',' or ']'", "did not find expected ',' or '}'",
	"found duplicate %YAML directive", "found incompatible YAML document",
	"found duplicate %TAG directive",
}

// syntax records a YAML parser error, with its line when it gives one.
// The parser's messages quote nothing of the file but an anchor's name.
func (p *endpointsParser) syntax(err error) {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	if slices.Contains(yamlParserProblems, msg) {
		line++
	}
	if strings.Contains(msg, "did not find expected ',' or") && bytes.Contains(p.data, []byte("${")) {
		msg += ` (inside [ ] or { } a ${NAME} must be quoted: "${NAME}")`
	}
	p.fileErr(line, "not valid YAML: %s", msg)
}

func (p *endpointsParser) parse() []Endpoint {
	dec := yaml.NewDecoder(bytes.NewReader(p.data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			p.syntax(err)
		}
		return nil
	}
	var more yaml.Node
	switch err := dec.Decode(&more); {
	case err == nil:
		p.fileErr(more.Line, "a second YAML document (---) starts here; the file holds one")
	case !errors.Is(err, io.EOF):
		p.syntax(err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.fileErr(root.Line, "want a mapping holding the key endpoints, got %s", kindOf(root))
		return nil
	}
	var list *yaml.Node
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key, ok := p.key(k, "", "")
		if !ok {
			continue
		}
		if key != "endpoints" {
			if plainKey.MatchString(key) {
				p.fileErr(k.Line, "%s: unknown key (the file holds only endpoints)", key)
			} else {
				p.fileErr(k.Line, "unknown key, not shown as it is not a plain name (the file holds only endpoints)")
			}
			continue
		}
		if first, dup := seen[key]; dup {
			p.fileErr(k.Line, "%s: given twice (first at line %d)", key, first)
			continue
		}
		seen[key] = k.Line
		list = v
	}
	if list == nil || isNull(list) {
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		p.fileErr(list.Line, "endpoints: want a list of endpoints, got %s", kindOf(list))
		return nil
	}
	var eps []Endpoint
	names := map[string]int{} // name → line of the first endpoint with it
	for i, item := range list.Content {
		ep, ok := p.endpoint(item, i+1)
		if !ok {
			continue
		}
		eps = append(eps, ep.Endpoint)
		if ep.Name == "" || !endpointName.MatchString(ep.Name) {
			continue
		}
		line := ep.line(keyName)
		switch first, dup := names[ep.Name]; {
		case ep.Name == DefaultEndpoint:
			p.endpointErr(line, ep.label, keyName, "%s", reservedNameProblem)
		case dup:
			p.endpointErr(line, ep.label, keyName, "already the name of the endpoint at line %d", first)
		default:
			names[ep.Name] = line
		}
	}
	return eps
}

// plainKey is a key shown in errors: an unknown key that does not look
// like a name may be a misplaced value, and is not echoed.
var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,39}$`)

// key returns mapping key node k as a string. label is the endpoint the
// key belongs to ("" at the top level), parent the key holding it (for
// headers).
func (p *endpointsParser) key(k *yaml.Node, label, parent string) (string, bool) {
	problem := ""
	switch {
	case k.Kind == yaml.AliasNode:
		problem = "a key may not be an alias (*name)"
	case k.ShortTag() == "!!merge":
		problem = "merge keys (<<) are not supported; write the keys out"
	case k.Kind != yaml.ScalarNode:
		problem = "a key must be a plain string, got " + kindOf(k)
	case isNull(k) && k.Value == "":
		problem = "a key may not be empty"
	default:
		return k.Value, true
	}
	if label == "" {
		p.fileErr(k.Line, "%s", problem)
	} else {
		p.endpointErr(k.Line, label, cmp.Or(parent, "key"), "%s", problem)
	}
	return "", false
}

// parsedEndpoint is an endpoint with what the parser learned of its keys.
type parsedEndpoint struct {
	Endpoint
	label string         // how errors name it
	at    int            // line of the item
	lines map[string]int // line of each key given
	// vars holds, for each key whose scalar value had ${…} replaced, the
	// variables used: problems Validate finds there may echo the value,
	// so they are told without it.
	vars map[string][]string
	// done marks keys whose problems the parser reported itself (or
	// checked entry by entry): Validate's findings there are dropped.
	done map[string]bool
}

// line is the line of key, or of the endpoint when key is not given.
func (e *parsedEndpoint) line(key string) int {
	if l, ok := e.lines[key]; ok {
		return l
	}
	return e.at
}

// endpoint reads the n-th item of the list and checks it with
// Endpoint.Validate, every problem recorded.
func (p *endpointsParser) endpoint(item *yaml.Node, n int) (*parsedEndpoint, bool) {
	label := "#" + strconv.Itoa(n)
	if item.Kind != yaml.MappingNode {
		p.endpointErr(item.Line, label, "endpoint", "want a mapping of %s, got %s", strings.Join(endpointKeys, ", "), kindOf(item))
		return nil, false
	}
	ep := &parsedEndpoint{label: label, at: item.Line, lines: map[string]int{},
		vars: map[string][]string{}, done: map[string]bool{}}
	// The name first, so that every other problem can name the endpoint.
	for i := 0; i+1 < len(item.Content); i += 2 {
		k, v := item.Content[i], item.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == keyName && v.Kind == yaml.ScalarNode && endpointName.MatchString(v.Value) {
			ep.label = v.Value
			break
		}
	}
	for i := 0; i+1 < len(item.Content); i += 2 {
		k, v := item.Content[i], item.Content[i+1]
		key, ok := p.key(k, ep.label, "")
		if !ok {
			continue
		}
		if !slices.Contains(endpointKeys, key) {
			if plainKey.MatchString(key) {
				p.endpointErr(k.Line, ep.label, key, "unknown key (the keys are %s)", strings.Join(endpointKeys, ", "))
			} else {
				p.endpointErr(k.Line, ep.label, "key", "unknown key, not shown as it is not a plain name (the keys are %s)", strings.Join(endpointKeys, ", "))
			}
			continue
		}
		if first, dup := ep.lines[key]; dup {
			p.endpointErr(k.Line, ep.label, key, "given twice (first at line %d)", first)
			continue
		}
		ep.lines[key] = k.Line
		p.value(ep, key, v)
	}
	p.validate(ep)
	return ep, true
}

// value reads v, the value of key, into ep.
func (p *endpointsParser) value(ep *parsedEndpoint, key string, v *yaml.Node) {
	switch key {
	case keyName:
		var ok bool
		ep.Name, _, ok = p.scalar(ep, key, "", v, false)
		ep.done[key] = !ok
	case keyURL:
		ep.URL = p.expandedScalar(ep, key, v)
	case keyToken:
		ep.Token = p.expandedScalar(ep, key, v)
	case keyEvents:
		if v.Kind != yaml.SequenceNode {
			ep.Events = p.expandedScalar(ep, key, v)
			return
		}
		ep.done[key] = true
		types, ok := p.list(ep, key, v, func(entry string, line int, s string, vars []string) bool {
			if _, err := event.ParseType(s); err != nil {
				p.endpointErr(line, ep.label, key, "%s%s is not an event type", entry, shown(s, vars))
				return false
			}
			return true
		})
		switch {
		case !ok:
		case len(types) == 0:
			ep.Events = "none"
		default:
			ep.Events = strings.Join(types, ",")
		}
	case keySecret:
		if v.Kind != yaml.SequenceNode {
			ep.Secret = p.expandedScalar(ep, key, v)
			return
		}
		ep.done[key] = true
		secrets, ok := p.list(ep, key, v, func(entry string, line int, s string, _ []string) bool {
			if _, err := verify.ParseSecrets(s); err != nil {
				p.endpointErr(line, ep.label, key, "%s%v", entry, err) // never echoes the secret
				return false
			}
			return true
		})
		switch {
		case !ok:
		case len(secrets) == 0:
			p.endpointErr(v.Line, ep.label, key, "an empty list; leave the key out to sign nothing")
		default:
			ep.Secret = strings.Join(secrets, " ")
		}
	case keyLegacySecretHeader:
		ep.done[key] = true
		s, vars, ok := p.scalar(ep, key, "", v, true)
		if !ok || s == "" {
			return
		}
		on, err := strconv.ParseBool(s)
		if err != nil {
			p.endpointErr(v.Line, ep.label, key, "%s is not true or false", shown(s, vars))
			return
		}
		ep.LegacySecretHeader = on
	case keyTimeout:
		ep.done[key] = true
		s, vars, ok := p.scalar(ep, key, "", v, true)
		if !ok || s == "" {
			return
		}
		if d, ok := p.duration(ep, key, "", v.Line, s, vars); ok {
			ep.Timeout = d
		}
	case keyRetrySchedule:
		ep.done[key] = true
		p.retrySchedule(ep, v)
	case keyRateLimit:
		ep.done[key] = true
		s, vars, ok := p.scalar(ep, key, "", v, true)
		if !ok || s == "" {
			return
		}
		r, err := ParseRateLimit(s)
		switch {
		case err != nil && vars != nil:
			p.endpointErr(v.Line, ep.label, key, "%s is not N/s, N/m, N/h or N/<duration> such as 50/s", shown(s, vars))
		case err != nil:
			p.endpointErr(v.Line, ep.label, key, "%v", err)
		default:
			ep.RateLimit = r
		}
	case keyOrdering:
		ep.Ordering = strings.ToLower(p.expandedScalar(ep, key, v))
	case keyHeaders:
		ep.done[key] = true
		p.headers(ep, v)
	}
}

// expandedScalar reads a scalar key whose problems Validate reports.
func (p *endpointsParser) expandedScalar(ep *parsedEndpoint, key string, v *yaml.Node) string {
	s, vars, ok := p.scalar(ep, key, "", v, true)
	if !ok {
		ep.done[key] = true
		return ""
	}
	if vars != nil {
		ep.vars[key] = vars
	}
	return s
}

// list reads a list of scalars (a YAML sequence, or one string holding a
// comma list), each ${…} expanded and checked by check. ok is false when
// some entry had a problem, each recorded.
func (p *endpointsParser) list(ep *parsedEndpoint, key string, v *yaml.Node, check func(entry string, line int, s string, vars []string) bool) (out []string, ok bool) {
	ok = true
	for i, item := range v.Content {
		entry := fmt.Sprintf("entry %d: ", i+1)
		s, vars, good := p.scalar(ep, key, entry, item, true)
		if !good {
			ok = false
			continue
		}
		if s == "" {
			p.endpointErr(item.Line, ep.label, key, "%sempty", entry)
			ok = false
			continue
		}
		if !check(entry, item.Line, s, vars) {
			ok = false
			continue
		}
		out = append(out, s)
	}
	return out, ok
}

// retrySchedule reads retry_schedule: a list of durations, or one string
// of comma separated ones.
func (p *endpointsParser) retrySchedule(ep *parsedEndpoint, v *yaml.Node) {
	key := keyRetrySchedule
	type entry struct {
		line int
		s    string
		vars []string
	}
	var entries []entry
	if v.Kind == yaml.SequenceNode {
		if len(v.Content) == 0 {
			p.endpointErr(v.Line, ep.label, key, "an empty list; leave the key out for the default schedule")
			return
		}
		for i, item := range v.Content {
			s, vars, ok := p.scalar(ep, key, fmt.Sprintf("entry %d: ", i+1), item, true)
			if !ok {
				return
			}
			entries = append(entries, entry{item.Line, s, vars})
		}
	} else {
		s, vars, ok := p.scalar(ep, key, "", v, true)
		if !ok || s == "" {
			return
		}
		for part := range strings.SplitSeq(s, ",") {
			entries = append(entries, entry{v.Line, strings.TrimSpace(part), vars})
		}
	}
	var sched []time.Duration
	bad := false
	for i, e := range entries {
		d, ok := p.duration(ep, key, fmt.Sprintf("entry %d: ", i+1), e.line, e.s, e.vars)
		bad = bad || !ok
		sched = append(sched, d)
	}
	if !bad {
		ep.RetrySchedule = sched
	}
}

// duration reads a duration above 0 (ParseSeconds).
func (p *endpointsParser) duration(ep *parsedEndpoint, key, entry string, line int, s string, vars []string) (time.Duration, bool) {
	d, err := ParseSeconds(s)
	switch {
	case err != nil:
		p.endpointErr(line, ep.label, key, "%s%s is not a Go duration such as 15s or a number of seconds", entry, shown(s, vars))
		return 0, false
	case d <= 0:
		p.endpointErr(line, ep.label, key, "%s%s must be more than 0", entry, shown(s, vars))
		return 0, false
	}
	return d, true
}

// headers reads the headers mapping, checking each header on its own line
// as Endpoint.Validate does. Header names are taken as written; values
// are never shown.
func (p *endpointsParser) headers(ep *parsedEndpoint, v *yaml.Node) {
	key := keyHeaders
	if isNull(v) {
		return
	}
	if v.Kind != yaml.MappingNode {
		p.endpointErr(v.Line, ep.label, key, "want a mapping of header names to values, got %s", kindOf(v))
		return
	}
	headers := map[string]string{}
	first := map[string]int{} // canonical name → line
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, hv := v.Content[i], v.Content[i+1]
		name, ok := p.key(k, ep.label, key)
		if !ok {
			continue
		}
		c := http.CanonicalHeaderKey(name)
		switch l, dup := first[c]; {
		case !validHeaderName(name):
			p.endpointErr(k.Line, ep.label, key, "%q is not a header name", name)
			continue
		case reservedHeader(name):
			p.endpointErr(k.Line, ep.label, key, "%s is set by memhook and may not be given", c)
			continue
		case dup:
			p.endpointErr(k.Line, ep.label, key, "%s given twice (first at line %d)", c, l)
			continue
		}
		first[c] = k.Line
		s, _, ok := p.scalar(ep, key, name+": ", hv, true)
		if !ok {
			continue
		}
		if strings.ContainsAny(s, "\r\n\x00") {
			p.endpointErr(hv.Line, ep.label, key, "the value of %s holds a line break or NUL", name)
			continue
		}
		headers[name] = s
	}
	if len(headers) > 0 {
		ep.Headers = headers
	}
}

// allowedTags are the YAML tags a scalar may carry: the ones plain YAML
// resolves to. !!binary and custom tags would change what a value means.
var allowedTags = []string{"!!str", "!!int", "!!float", "!!bool", "!!null", "!!timestamp"}

// scalar returns scalar node v's value, trimmed, with ${…} expanded when
// expand; vars lists the variables used (nil if none). A null is "". ok
// is false after a problem was recorded.
func (p *endpointsParser) scalar(ep *parsedEndpoint, key, entry string, v *yaml.Node, expand bool) (s string, vars []string, ok bool) {
	switch {
	case v.Kind == yaml.AliasNode:
		p.endpointErr(v.Line, ep.label, key, "%saliases (*%s) are not supported; write the value out", entry, v.Value)
		return "", nil, false
	case v.Kind != yaml.ScalarNode:
		want := "a string"
		if entry == "" && (key == keyEvents || key == keySecret || key == keyRetrySchedule) {
			want = "a string or a list of strings"
		}
		p.endpointErr(v.Line, ep.label, key, "%swant %s, got %s", entry, want, kindOf(v))
		return "", nil, false
	case !slices.Contains(allowedTags, v.ShortTag()):
		p.endpointErr(v.Line, ep.label, key, "%sthe YAML tag %s is not supported", entry, v.ShortTag())
		return "", nil, false
	case isNull(v):
		return "", nil, true
	case !expand:
		return strings.TrimSpace(v.Value), nil, true
	}
	s, vars, problems := expandVars(v.Value, p.lookup)
	for _, pr := range problems {
		p.endpointErr(v.Line, ep.label, key, "%s%s", entry, pr)
	}
	return strings.TrimSpace(s), vars, len(problems) == 0
}

// validate runs Endpoint.Validate and records its findings at the line of
// their key, dropping those of keys the parser checked itself and telling
// the others without a value that came from a variable.
func (p *endpointsParser) validate(ep *parsedEndpoint) {
	err := ep.Validate()
	if err == nil {
		return
	}
	var found []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		found = j.Unwrap()
	} else {
		found = []error{err}
	}
	for _, f := range found {
		var ee *EndpointError
		if !errors.As(f, &ee) {
			p.endpointErr(ep.at, ep.label, "endpoint", "%v", f)
			continue
		}
		if ep.done[ee.Key] {
			continue
		}
		problem := ee.Problem
		if vars := ep.vars[ee.Key]; vars != nil && ee.Key != keySecret && ee.Key != keyToken {
			// secret and token problems never hold the value; the others may.
			problem = fmt.Sprintf("%s is not %s", shown("", vars), wantOf(ee.Key))
		}
		p.endpointErr(ep.line(ee.Key), ep.label, ee.Key, "%s", problem)
	}
}

// wantOf says what key's value must be, for problems told without it.
func wantOf(key string) string {
	switch key {
	case keyURL:
		return "an http or https URL (http[s]://host[:port]/path)"
	case keyEvents:
		return "all, none or a comma list of event types"
	}
	return "valid"
}

// varName is what ${…} may hold.
var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandVars replaces each ${NAME} in s by lookup(NAME), and $${ by ${.
// vars lists the variables used, each once; problems name an unset or
// empty variable, or a ${ that does not start ${NAME}, without any value.
func expandVars(s string, lookup func(string) (string, bool)) (out string, vars []string, problems []string) {
	if !strings.Contains(s, "${") {
		return s, nil, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 || !varName.MatchString(s[i+2:i+end]) {
			problems = append(problems, fmt.Sprintf("the ${ at character %d does not start ${NAME} (NAME of A-Z, a-z, 0-9 and _); write $${ for a literal ${", len([]rune(s[:i]))+1))
			if end < 0 {
				break
			}
			i += end + 1
			continue
		}
		name := s[i+2 : i+end]
		i += end + 1
		if !slices.Contains(vars, name) {
			vars = append(vars, name)
		}
		v, ok := lookup(name)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("${%s} is not set", name))
		case strings.TrimSpace(v) == "":
			problems = append(problems, fmt.Sprintf("${%s} is empty", name))
		}
		b.WriteString(strings.TrimSpace(v))
	}
	if problems != nil {
		return "", vars, problems
	}
	return b.String(), vars, nil
}

// varList writes vars as "${A}" or "${A}, ${B}".
func varList(vars []string) string {
	out := make([]string, len(vars))
	for i, v := range vars {
		out[i] = "${" + v + "}"
	}
	return strings.Join(out, ", ")
}

// shown is s quoted for an error, or the variables it came from.
func shown(s string, vars []string) string {
	if vars != nil {
		return "the value of " + varList(vars) + " (not shown, it comes from a variable)"
	}
	return strconv.Quote(s)
}

// isNull reports whether n is YAML's null (~, null, or nothing).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// kindOf names n's YAML kind for errors.
func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return "a single value"
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias (*" + n.Value + ")"
	}
	return "a YAML document"
}
