package syncbuf_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/memhook/memhook/internal/syncbuf"
)

// Writers and a reader at once (go test -race): every write is kept
// whole, and the reader sees a prefix of the final text each time.
func TestBufferConcurrent(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("line\n"))
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			if s := b.String(); strings.Count(s, "line\n")*len("line\n") != len(s) {
				t.Errorf("read a torn write: %q", s)
				return
			}
		}
	}()
	wg.Wait()
	<-done
	if got := strings.Count(b.String(), "line\n"); got != 400 {
		t.Errorf("%d lines, want 400", got)
	}
}
