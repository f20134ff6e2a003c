package event_test

import (
	"fmt"
	"time"

	"github.com/memhook/memhook/bus/event"
)

func ExampleEncode() {
	e := event.NewPreferenceStored("user123", "morning meetings", "schedule")
	e.RequestID = "req_789"
	b, err := event.Encode(e, event.Meta{
		ID:         "6f1c1c1e-9d7b-4f3a-8a51-2b1f2c3d4e5f",
		Time:       time.Date(2024, 1, 15, 10, 30, 0, 123456000, time.UTC),
		BotVersion: "1.0.0",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(b))

	_, err = event.Encode(event.Event{Type: "memory_exploded"}, event.Meta{})
	fmt.Println(err)
	// Output:
	// {"event":"preference_stored","user_id":"user123","data":{"category":"schedule","preference":"morning meetings"},"timestamp":"2024-01-15T10:30:00.123456Z","source":"markdown-brain-bot","bot_version":"1.0.0","request_id":"req_789","id":"6f1c1c1e-9d7b-4f3a-8a51-2b1f2c3d4e5f"}
	// event field event: unknown event type "memory_exploded"
	// event field user_id: must not be empty
}

func ExampleParseSet() {
	for _, v := range []string{"all", "none", "memory_deleted, memory_added", "memory_added,memory_exploded"} {
		s, err := event.ParseSet(v)
		if err != nil {
			fmt.Printf("%q: %v\n", v, err)
			continue
		}
		fmt.Printf("%q: %s (memory_added: %t)\n", v, s, s.Has(event.MemoryAdded))
	}
	// Output:
	// "all": all (memory_added: true)
	// "none": none (memory_added: false)
	// "memory_deleted, memory_added": memory_added,memory_deleted (memory_added: true)
	// "memory_added,memory_exploded": event field event: unknown event type "memory_exploded"
}
