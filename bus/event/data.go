package event

// Typed constructors for the seed document's event-specific data. Each
// returns an Event ready for Emit; the shapes are the seed's examples.

// Memory is one stored memory as the seed shows it in "result" and
// "memories".
type Memory struct {
	ID       string         `json:"id"`
	Content  string         `json:"content"`
	Metadata map[string]any `json:"metadata,omitempty"`
}

// SearchPreview is how many memories a memory_searched event carries: the
// seed sends the first three results only.
const SearchPreview = 3

// NewMemoryAdded builds memory_added with data {"result": memory}.
func NewMemoryAdded(userID string, result Memory) Event {
	return Event{Type: MemoryAdded, UserID: userID, Data: map[string]any{"result": result}}
}

// NewMemorySearched builds memory_searched with data {"query", "limit",
// "results_count", "memories"}; results_count counts all results, memories
// holds only the first SearchPreview of them.
func NewMemorySearched(userID, query string, limit int, results []Memory) Event {
	preview := results
	if len(preview) > SearchPreview {
		preview = preview[:SearchPreview]
	}
	if preview == nil {
		preview = []Memory{}
	}
	return Event{Type: MemorySearched, UserID: userID, Data: map[string]any{
		"query":         query,
		"limit":         limit,
		"results_count": len(results),
		"memories":      preview,
	}}
}

// Relationship is the "result" of a relationship_added event.
type Relationship struct {
	ID         string  `json:"id"`
	Confidence float64 `json:"confidence"`
}

// NewRelationshipAdded builds relationship_added with data {"source",
// "relationship", "target", "result"}.
func NewRelationshipAdded(userID, source, relationship, target string, result Relationship) Event {
	return Event{Type: RelationshipAdded, UserID: userID, Data: map[string]any{
		"source":       source,
		"relationship": relationship,
		"target":       target,
		"result":       result,
	}}
}

// NewMemoryError builds memory_error with data {"operation", "error",
// "items_count"}; items_count is left out when itemsCount is 0.
func NewMemoryError(userID, operation string, err error, itemsCount int) Event {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	data := map[string]any{"operation": operation, "error": msg}
	if itemsCount > 0 {
		data["items_count"] = itemsCount
	}
	return Event{Type: MemoryError, UserID: userID, Data: data}
}

// NewPreferenceStored builds preference_stored with data {"preference",
// "category"}, the fields the seed's CRM example reads.
func NewPreferenceStored(userID, preference, category string) Event {
	return Event{Type: PreferenceStored, UserID: userID, Data: map[string]any{
		"preference": preference,
		"category":   category,
	}}
}

// NewCorrectionStored builds correction_stored with data {"original",
// "correction"}.
func NewCorrectionStored(userID, original, correction string) Event {
	return Event{Type: CorrectionStored, UserID: userID, Data: map[string]any{
		"original":   original,
		"correction": correction,
	}}
}

// BatchResult counts the items of one batch operation.
type BatchResult struct {
	Operation string `json:"operation"`
	Total     int    `json:"items_count"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
}

// NewBatchOperationCompleted builds batch_operation_completed: one webhook
// for a whole batch, as the seed asks, with data {"operation",
// "items_count", "succeeded", "failed"}.
func NewBatchOperationCompleted(userID string, r BatchResult) Event {
	return Event{Type: BatchOperationCompleted, UserID: userID, Data: r}
}
