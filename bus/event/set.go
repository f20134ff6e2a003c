package event

import (
	"errors"
	"fmt"
	"strings"
)

// Set is a set of event types, as MEM0_WEBHOOK_EVENTS names them. The zero
// Set holds every type (the seed's default, "all"); NoTypes holds none.
type Set struct {
	// excluded has bit i set when allTypes[i] is not in the set, so that
	// the zero value is "all".
	excluded uint16
}

// AllTypes holds all twelve types; it equals the zero Set.
var AllTypes = Set{}

// NoTypes holds no type (the seed's "none").
var NoTypes = Set{excluded: 1<<len(allTypes) - 1}

// SetOf returns the set holding exactly the given types; unknown types are
// ignored (validate them with ParseType first).
func SetOf(types ...Type) Set {
	s := NoTypes
	for _, t := range types {
		if i := t.index(); i >= 0 {
			s.excluded &^= 1 << i
		}
	}
	return s
}

// ParseSet reads the seed's MEM0_WEBHOOK_EVENTS syntax: "all" (or empty),
// "none", or a comma-separated list of event types. Every unknown name is
// reported, each as a *FieldError wrapping ErrInvalid.
func ParseSet(s string) (Set, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "all":
		return AllTypes, nil
	case "none":
		return NoTypes, nil
	}
	var types []Type
	var errs []error
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		t, err := ParseType(part)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		types = append(types, t)
	}
	if err := errors.Join(errs...); err != nil {
		return Set{}, err
	}
	if len(types) == 0 {
		return Set{}, &FieldError{Field: "events", Problem: fmt.Sprintf("%q names no event type", s)}
	}
	return SetOf(types...), nil
}

// Has reports whether t is in the set.
func (s Set) Has(t Type) bool {
	i := t.index()
	return i >= 0 && s.excluded&(1<<i) == 0
}

// Types lists the set's types in the seed's order.
func (s Set) Types() []Type {
	out := []Type{}
	for _, t := range allTypes {
		if s.Has(t) {
			out = append(out, t)
		}
	}
	return out
}

// String writes the set in ParseSet's syntax: "all", "none" or a list.
func (s Set) String() string {
	switch s {
	case AllTypes:
		return "all"
	case NoTypes:
		return "none"
	}
	names := make([]string, 0, len(allTypes))
	for _, t := range s.Types() {
		names = append(names, string(t))
	}
	return strings.Join(names, ",")
}

func (t Type) index() int {
	for i, k := range allTypes {
		if k == t {
			return i
		}
	}
	return -1
}
