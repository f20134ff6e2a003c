package attemptlog_test

import (
	"testing"

	"github.com/memhook/memhook/attemptlog"
	"github.com/memhook/memhook/internal/redistest"
	"github.com/memhook/memhook/transports"
)

// What Record costs the attempt that calls it, from parallel goroutines
// as the delivery workers call it.
func BenchmarkRingRecord(b *testing.B) {
	r := attemptlog.NewRing(attemptlog.DefaultRingSize)
	a := attempt(1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Record(a)
		}
	})
}

func BenchmarkRedisRecord(b *testing.B) {
	srv := redistest.StartWithoutPersistence(b)
	l, err := attemptlog.NewRedis(attemptlog.RedisConfig{Redis: transports.RedisConfig{URL: srv.URL()}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	a := attempt(1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Record(a)
		}
	})
	b.ReportMetric(float64(l.Dropped())/float64(b.N), "dropped/op")
}
