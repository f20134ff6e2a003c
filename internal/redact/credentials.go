package redact

import (
	"sort"
	"strings"
)

// Credentials returns a Replacer that replaces each of tokens and each of
// secrets with REDACTED. A secret may hold several, as
// MEM0_WEBHOOK_SECRET does (separated by spaces, commas, tabs or
// newlines): each is replaced, also without its whsec_ prefix. Values
// under 6 bytes are left: they would match ordinary text. Longer values
// go first, so that no part of one survives a shorter one's replacement.
func Credentials(tokens, secrets []string) *strings.Replacer {
	var olds []string
	add := func(v string) {
		if len(v) >= 6 {
			olds = append(olds, v)
		}
	}
	for _, t := range tokens {
		add(t)
	}
	for _, s := range secrets {
		add(s)
		for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' }) {
			add(f)
			add(strings.TrimPrefix(f, "whsec_"))
		}
	}
	sort.Slice(olds, func(i, j int) bool { return len(olds[i]) > len(olds[j]) })
	args := make([]string, 0, 2*len(olds))
	for _, o := range olds {
		args = append(args, o, "REDACTED")
	}
	return strings.NewReplacer(args...)
}
