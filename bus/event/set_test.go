package event_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/memhook/memhook/bus/event"
)

func TestParseSet(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want event.Set
	}{
		{name: "all", in: "all", want: event.AllTypes},
		{name: "all in capitals with spaces", in: "  ALL ", want: event.AllTypes},
		{name: "empty means all", in: "", want: event.AllTypes},
		{name: "none", in: "none", want: event.NoTypes},
		{name: "None", in: "None", want: event.NoTypes},
		{name: "seed's first example", in: "memory_added,memory_deleted,relationship_added",
			want: event.SetOf(event.MemoryAdded, event.MemoryDeleted, event.RelationshipAdded)},
		{name: "seed's relationship example", in: "relationship_added,relationship_deleted,graph_built",
			want: event.SetOf(event.RelationshipAdded, event.RelationshipDeleted, event.GraphBuilt)},
		{name: "one", in: "memory_error", want: event.SetOf(event.MemoryError)},
		{name: "spaces around names", in: " memory_added , memory_deleted ", want: event.SetOf(event.MemoryAdded, event.MemoryDeleted)},
		{name: "empty items skipped", in: "memory_added,,memory_deleted,", want: event.SetOf(event.MemoryAdded, event.MemoryDeleted)},
		{name: "duplicates", in: "graph_built,graph_built", want: event.SetOf(event.GraphBuilt)},
		{name: "all twelve listed", in: strings.Join(typeNames(event.Types()), ","), want: event.AllTypes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := event.ParseSet(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseSet(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseSetErrors(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantNamed []string
		wantCount int
	}{
		{name: "one unknown", in: "memory_added,memory_exploded", wantNamed: []string{"memory_exploded"}, wantCount: 1},
		{name: "every unknown reported", in: "bogus,memory_added,nope,also_not", wantNamed: []string{"bogus", "nope", "also_not"}, wantCount: 3},
		{name: "all inside a list", in: "all,memory_added", wantNamed: []string{`"all"`}, wantCount: 1},
		{name: "wrong case", in: "Memory_Added", wantNamed: []string{"Memory_Added"}, wantCount: 1},
		{name: "empty list", in: ",", wantNamed: []string{`","`}, wantCount: 1},
		{name: "only separators and spaces", in: " , ,, ", wantNamed: []string{"names no event type"}, wantCount: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := event.ParseSet(tt.in)
			if err == nil {
				t.Fatalf("ParseSet(%q) = %v, want an error", tt.in, got)
			}
			if !errors.Is(err, event.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if n := len(fieldsOf(err)); n != tt.wantCount {
				t.Errorf("ParseSet(%q) reported %d problems, want %d: %v", tt.in, n, tt.wantCount, err)
			}
			for _, name := range tt.wantNamed {
				if !strings.Contains(err.Error(), name) {
					t.Errorf("ParseSet(%q) error %q does not name %s", tt.in, err, name)
				}
			}
		})
	}
}

func TestSetZeroValueIsAll(t *testing.T) {
	var zero event.Set
	if zero != event.AllTypes {
		t.Fatal("the zero Set is not AllTypes")
	}
	for _, typ := range event.Types() {
		if !zero.Has(typ) {
			t.Errorf("zero Set lacks %s", typ)
		}
		if event.NoTypes.Has(typ) {
			t.Errorf("NoTypes has %s", typ)
		}
	}
	if !slices.Equal(zero.Types(), event.Types()) {
		t.Errorf("zero Set Types() = %v", zero.Types())
	}
	if got := event.NoTypes.Types(); got == nil || len(got) != 0 {
		t.Errorf("NoTypes.Types() = %#v, want an empty, non-nil slice", got)
	}
}

func TestSetHasNoUnknownType(t *testing.T) {
	for _, s := range []event.Set{event.AllTypes, event.NoTypes, event.SetOf(event.MemoryAdded)} {
		for _, typ := range []event.Type{"", "memory_exploded", "all"} {
			if s.Has(typ) {
				t.Errorf("%v.Has(%q) = true", s, typ)
			}
		}
	}
}

func TestSetOf(t *testing.T) {
	tests := []struct {
		name  string
		types []event.Type
		want  []event.Type
	}{
		{name: "nothing is none", types: nil, want: []event.Type{}},
		{name: "unknown types are ignored", types: []event.Type{"bogus", event.GraphBuilt}, want: []event.Type{event.GraphBuilt}},
		{name: "listed in seed order", types: []event.Type{event.MemoryError, event.MemoryAdded, event.GraphBuilt},
			want: []event.Type{event.MemoryAdded, event.GraphBuilt, event.MemoryError}},
		{name: "every type is all", types: event.Types(), want: event.Types()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := event.SetOf(tt.types...)
			if got := s.Types(); !slices.Equal(got, tt.want) {
				t.Errorf("SetOf(%v).Types() = %v, want %v", tt.types, got, tt.want)
			}
		})
	}
	if event.SetOf() != event.NoTypes {
		t.Error("SetOf() != NoTypes")
	}
	if event.SetOf(event.Types()...) != event.AllTypes {
		t.Error("SetOf(all twelve) != AllTypes")
	}
}

func TestSetString(t *testing.T) {
	tests := []struct {
		name string
		set  event.Set
		want string
	}{
		{name: "all", set: event.AllTypes, want: "all"},
		{name: "none", set: event.NoTypes, want: "none"},
		{name: "list in seed order", set: event.SetOf(event.MemoryDeleted, event.MemoryAdded), want: "memory_added,memory_deleted"},
		{name: "all but one", set: event.SetOf(event.Types()[1:]...), want: strings.Join(typeNames(event.Types()[1:]), ",")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.set.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSetStringRoundTripsEverySubset(t *testing.T) {
	types := event.Types()
	for mask := range 1 << len(types) {
		var members []event.Type
		for i, typ := range types {
			if mask&(1<<i) != 0 {
				members = append(members, typ)
			}
		}
		s := event.SetOf(members...)
		back, err := event.ParseSet(s.String())
		if err != nil {
			t.Fatalf("ParseSet(%q): %v", s.String(), err)
		}
		if back != s {
			t.Fatalf("ParseSet(%q) = %v, want the set of %v", s.String(), back, members)
		}
		if !slices.Equal(back.Types(), members) {
			t.Fatalf("round trip of %v holds %v", members, back.Types())
		}
	}
}

func typeNames(types []event.Type) []string {
	out := make([]string, len(types))
	for i, typ := range types {
		out[i] = string(typ)
	}
	return out
}
