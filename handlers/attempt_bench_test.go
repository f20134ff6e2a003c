package handlers_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/memhook/memhook/handlers"
)

// One attempt against a loopback receiver answering 200 with a short
// body, without and with OnAttempt: what keeping the response excerpt
// costs (allocs/op shows that without OnAttempt nothing is kept).
func BenchmarkDeliverAttempt(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("ok", 100)))
	}))
	defer srv.Close()
	for _, tt := range []struct {
		name string
		on   func(*message.Message, handlers.AttemptResult)
	}{
		{"without OnAttempt", nil},
		{"with OnAttempt", func(_ *message.Message, r handlers.AttemptResult) { _ = string(r.Response) }},
	} {
		b.Run(tt.name, func(b *testing.B) {
			d, err := handlers.NewDeliver(handlers.DeliverConfig{URL: srv.URL, Timeout: 5 * time.Second, OnAttempt: tt.on})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			b.ReportAllocs()
			for range b.N {
				if err := d.Handle(message.NewMessage("x", []byte(`{}`))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
