package event_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/memhook/memhook/bus/event"
)

// dataOf encodes e and returns its envelope's "data" as written.
func dataOf(t *testing.T, e event.Event) json.RawMessage {
	t.Helper()
	b, err := event.Encode(e, seedMeta())
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	return env.Data
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func mems(n int) []event.Memory {
	out := make([]event.Memory, n)
	for i := range out {
		out[i] = event.Memory{ID: "m" + string(rune('1'+i)), Content: "c" + string(rune('1'+i))}
	}
	return out
}

func TestConstructorsMakeTheSeedsShapes(t *testing.T) {
	tests := []struct {
		name     string
		e        event.Event
		wantType event.Type
		wantData string
	}{
		{
			name: "memory_added",
			e: event.NewMemoryAdded("u1", event.Memory{ID: "mem_123", Content: "User works at Austin facility",
				Metadata: map[string]any{"type": "preference", "category": "location"}}),
			wantType: event.MemoryAdded,
			wantData: `{"result":{"id":"mem_123","content":"User works at Austin facility","metadata":{"type":"preference","category":"location"}}}`,
		},
		{
			name:     "memory_added without metadata",
			e:        event.NewMemoryAdded("u1", event.Memory{ID: "mem_1", Content: "x"}),
			wantType: event.MemoryAdded,
			wantData: `{"result":{"id":"mem_1","content":"x"}}`,
		},
		{
			name:     "memory_searched keeps the first three and counts all",
			e:        event.NewMemorySearched("u1", "facilities in Austin", 5, mems(5)),
			wantType: event.MemorySearched,
			wantData: `{"query":"facilities in Austin","limit":5,"results_count":5,"memories":[` +
				`{"id":"m1","content":"c1"},{"id":"m2","content":"c2"},{"id":"m3","content":"c3"}]}`,
		},
		{
			name:     "memory_searched with exactly three",
			e:        event.NewMemorySearched("u1", "q", 10, mems(3)),
			wantType: event.MemorySearched,
			wantData: `{"query":"q","limit":10,"results_count":3,"memories":[{"id":"m1","content":"c1"},{"id":"m2","content":"c2"},{"id":"m3","content":"c3"}]}`,
		},
		{
			name:     "memory_searched with fewer than three",
			e:        event.NewMemorySearched("u1", "q", 10, mems(2)),
			wantType: event.MemorySearched,
			wantData: `{"query":"q","limit":10,"results_count":2,"memories":[{"id":"m1","content":"c1"},{"id":"m2","content":"c2"}]}`,
		},
		{
			name:     "memory_searched with nil results",
			e:        event.NewMemorySearched("u1", "q", 5, nil),
			wantType: event.MemorySearched,
			wantData: `{"query":"q","limit":5,"results_count":0,"memories":[]}`,
		},
		{
			name: "relationship_added",
			e: event.NewRelationshipAdded("u1", "North Austin Facility", "HAS_PARTNER", "GreenEnergy Capital",
				event.Relationship{ID: "rel_456", Confidence: 1.0}),
			wantType: event.RelationshipAdded,
			wantData: `{"source":"North Austin Facility","relationship":"HAS_PARTNER","target":"GreenEnergy Capital","result":{"id":"rel_456","confidence":1.0}}`,
		},
		{
			name:     "memory_error",
			e:        event.NewMemoryError("u1", "batch_add_memories", errors.New("Connection timeout to vector store"), 25),
			wantType: event.MemoryError,
			wantData: `{"operation":"batch_add_memories","error":"Connection timeout to vector store","items_count":25}`,
		},
		{
			name:     "memory_error without items",
			e:        event.NewMemoryError("u1", "recall_context", errors.New("boom"), 0),
			wantType: event.MemoryError,
			wantData: `{"operation":"recall_context","error":"boom"}`,
		},
		{
			name:     "memory_error with nil error",
			e:        event.NewMemoryError("u1", "recall_context", nil, 0),
			wantType: event.MemoryError,
			wantData: `{"operation":"recall_context","error":""}`,
		},
		{
			name:     "preference_stored",
			e:        event.NewPreferenceStored("u1", "morning meetings", "schedule"),
			wantType: event.PreferenceStored,
			wantData: `{"preference":"morning meetings","category":"schedule"}`,
		},
		{
			name:     "correction_stored",
			e:        event.NewCorrectionStored("u1", "lives in Dallas", "lives in Austin"),
			wantType: event.CorrectionStored,
			wantData: `{"original":"lives in Dallas","correction":"lives in Austin"}`,
		},
		{
			name:     "batch_operation_completed",
			e:        event.NewBatchOperationCompleted("u1", event.BatchResult{Operation: "batch_add_memories", Total: 25, Succeeded: 24, Failed: 1}),
			wantType: event.BatchOperationCompleted,
			wantData: `{"operation":"batch_add_memories","items_count":25,"succeeded":24,"failed":1}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.e.Type != tt.wantType || tt.e.UserID != "u1" {
				t.Errorf("Type, UserID = %q, %q; want %q, u1", tt.e.Type, tt.e.UserID, tt.wantType)
			}
			if got := dataOf(t, tt.e); !sameJSON(t, got, []byte(tt.wantData)) {
				t.Errorf("data = %s\nwant   %s", got, tt.wantData)
			}
		})
	}
}

func TestMemorySearchedNilResultsIsAnEmptyArray(t *testing.T) {
	got := string(dataOf(t, event.NewMemorySearched("u1", "q", 5, nil)))
	if !strings.Contains(got, `"memories":[]`) || strings.Contains(got, "null") {
		t.Errorf("data = %s, want memories to be [] (not null)", got)
	}
}
