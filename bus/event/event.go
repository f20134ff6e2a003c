// Package event holds memhook's event model: the event types of the seed
// document, the Event an application emits, and the envelope that travels on
// the wire. It imports nothing but the standard library, so every other
// package of memhook (and any receiver) can use it.
package event

import (
	"errors"
	"fmt"
	"strings"
)

// Type names a memory operation. Its values are the seed document's event
// names; they travel unchanged in the envelope's "event" field and in the
// Watermill message metadata under MetaType.
type Type string

// The twelve event types of the seed document.
const (
	MemoryAdded             Type = "memory_added"
	MemorySearched          Type = "memory_searched"
	MemoryDeleted           Type = "memory_deleted"
	MemoryUpdated           Type = "memory_updated"
	PreferenceStored        Type = "preference_stored"
	CorrectionStored        Type = "correction_stored"
	RelationshipAdded       Type = "relationship_added"
	RelationshipDeleted     Type = "relationship_deleted"
	GraphBuilt              Type = "graph_built"
	MemoryOptimized         Type = "memory_optimized"
	BatchOperationCompleted Type = "batch_operation_completed"
	MemoryError             Type = "memory_error"
)

// allTypes is in the seed's order; Types returns a copy.
var allTypes = [...]Type{
	MemoryAdded, MemorySearched, MemoryDeleted, MemoryUpdated,
	PreferenceStored, CorrectionStored, RelationshipAdded, RelationshipDeleted,
	GraphBuilt, MemoryOptimized, BatchOperationCompleted, MemoryError,
}

// Types returns the twelve known event types in the seed document's order.
func Types() []Type {
	out := make([]Type, len(allTypes))
	copy(out, allTypes[:])
	return out
}

// Valid reports whether t is one of the twelve known event types.
func (t Type) Valid() bool {
	switch t {
	case MemoryAdded, MemorySearched, MemoryDeleted, MemoryUpdated,
		PreferenceStored, CorrectionStored, RelationshipAdded, RelationshipDeleted,
		GraphBuilt, MemoryOptimized, BatchOperationCompleted, MemoryError:
		return true
	}
	return false
}

// ParseType returns the Type named s (surrounding spaces ignored), or an
// error wrapping ErrInvalid that names s when it is not a known type.
func ParseType(s string) (Type, error) {
	t := Type(strings.TrimSpace(s))
	if !t.Valid() {
		return "", &FieldError{Field: "event", Problem: fmt.Sprintf("unknown event type %q", s)}
	}
	return t, nil
}

// Event is what an application emits after a memory operation. Data is
// anything encoding/json can encode; it becomes the envelope's "data".
type Event struct {
	Type      Type
	UserID    string
	Data      any
	RequestID string
}

// Validate reports every problem of e at once (errors.Join of *FieldError),
// or nil. It does not encode Data; Encode reports data that cannot be
// encoded.
func (e Event) Validate() error {
	var errs []error
	if !e.Type.Valid() {
		errs = append(errs, &FieldError{Field: "event", Problem: fmt.Sprintf("unknown event type %q", string(e.Type))})
	}
	if strings.TrimSpace(e.UserID) == "" {
		errs = append(errs, &FieldError{Field: "user_id", Problem: "must not be empty"})
	}
	return errors.Join(errs...)
}

// ErrInvalid is wrapped by every *FieldError: errors.Is(err, ErrInvalid)
// tells an invalid event from other failures.
var ErrInvalid = errors.New("event: invalid")

// FieldError says which field of an event or envelope is wrong and why.
// Returned by Validate, Encode and Decode.
type FieldError struct {
	Field   string
	Problem string
}

// Error implements error.
func (e *FieldError) Error() string {
	return "event field " + e.Field + ": " + e.Problem
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }
