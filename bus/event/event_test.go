package event_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/memhook/memhook/bus/event"
)

// fieldsOf lists the Field of every *event.FieldError in err (walking
// errors.Join), sorted, so that a test sees every problem reported at once.
func fieldsOf(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *event.FieldError:
			out = append(out, e.Field)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	slices.Sort(out)
	return out
}

func TestTypesAreTheSeedsTwelveInOrder(t *testing.T) {
	want := []event.Type{
		"memory_added", "memory_searched", "memory_deleted", "memory_updated",
		"preference_stored", "correction_stored", "relationship_added", "relationship_deleted",
		"graph_built", "memory_optimized", "batch_operation_completed", "memory_error",
	}
	got := event.Types()
	if !slices.Equal(got, want) {
		t.Fatalf("Types() = %v, want %v", got, want)
	}
	got[0] = "changed"
	if event.Types()[0] != event.MemoryAdded {
		t.Error("Types() returns the package's own slice: a caller changed it")
	}
}

func TestTypeValid(t *testing.T) {
	for _, typ := range event.Types() {
		if !typ.Valid() {
			t.Errorf("%q.Valid() = false", typ)
		}
	}
	for _, typ := range []event.Type{"", "memory", "Memory_Added", " memory_added", "memory_added ", "all", "none"} {
		if typ.Valid() {
			t.Errorf("%q.Valid() = true", typ)
		}
	}
}

func TestParseType(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    event.Type
		wantErr bool
	}{
		{name: "known", in: "graph_built", want: event.GraphBuilt},
		{name: "surrounding spaces", in: "  memory_error\t", want: event.MemoryError},
		{name: "unknown", in: "memory_exploded", wantErr: true},
		{name: "wrong case", in: "MEMORY_ADDED", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := event.ParseType(tt.in)
			if tt.wantErr {
				var fe *event.FieldError
				if !errors.As(err, &fe) || fe.Field != "event" {
					t.Fatalf("ParseType(%q) error = %v, want a *FieldError for event", tt.in, err)
				}
				if !errors.Is(err, event.ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
				if got != "" {
					t.Errorf("ParseType(%q) = %q with an error, want empty", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseType(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestEventValidate(t *testing.T) {
	valid := event.Event{Type: event.MemoryAdded, UserID: "user123", Data: map[string]any{"k": "v"}}
	tests := []struct {
		name   string
		change func(*event.Event)
		want   []string
	}{
		{name: "valid", change: func(*event.Event) {}},
		{name: "no data is still valid", change: func(e *event.Event) { e.Data = nil }},
		{name: "unknown type", change: func(e *event.Event) { e.Type = "memory_exploded" }, want: []string{"event"}},
		{name: "empty type", change: func(e *event.Event) { e.Type = "" }, want: []string{"event"}},
		{name: "empty user", change: func(e *event.Event) { e.UserID = "" }, want: []string{"user_id"}},
		{name: "blank user", change: func(e *event.Event) { e.UserID = " \t\n" }, want: []string{"user_id"}},
		{name: "both at once", change: func(e *event.Event) { e.Type, e.UserID = "x", "" }, want: []string{"event", "user_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := valid
			tt.change(&e)
			err := e.Validate()
			if got := fieldsOf(err); !slices.Equal(got, tt.want) {
				t.Fatalf("Validate() = %v: fields %v, want %v", err, got, tt.want)
			}
			if tt.want != nil && !errors.Is(err, event.ErrInvalid) {
				t.Errorf("Validate() = %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestFieldErrorNamesTheField(t *testing.T) {
	err := error(&event.FieldError{Field: "user_id", Problem: "must not be empty"})
	if got, want := err.Error(), "event field user_id: must not be empty"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, event.ErrInvalid) {
		t.Error("a *FieldError does not wrap ErrInvalid")
	}
}
