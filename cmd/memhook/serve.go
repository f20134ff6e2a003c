package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	wmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/memhook/memhook/admin"
	"github.com/memhook/memhook/bus"
	"github.com/memhook/memhook/bus/event"
	"github.com/memhook/memhook/handlers"
	"github.com/memhook/memhook/transports"
	"github.com/memhook/memhook/verify"
)

// Defaults of serveConfig.
const (
	defaultAddr            = "127.0.0.1:8000"
	defaultShutdownTimeout = 30 * time.Second
)

// serveConfig is what serve reads besides bus.Config.
type serveConfig struct {
	Addr            string
	AdminToken      string
	IncomingToken   string
	IncomingSecrets []verify.Secret
	IngestSecrets   []verify.Secret
	ShutdownTimeout time.Duration
	LogFormat       string
	LogLevel        string
	CPUProfile      string
	// TLS is set when MEMHOOK_TLS_CERT and MEMHOOK_TLS_KEY are: serve
	// speaks https only.
	TLS *tls.Config
	// EndpointsFile is MEMHOOK_ENDPOINTS_FILE, read again on SIGHUP with
	// Lookup expanding its ${VAR}s.
	EndpointsFile string
	Lookup        func(string) (string, bool)
}

// loadTLS reads the certificate and key files of MEMHOOK_TLS_CERT and
// MEMHOOK_TLS_KEY: both or neither. Its errors name the variable and the
// file, never the key's content.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case keyFile == "":
		return nil, errors.New("MEMHOOK_TLS_CERT is set but MEMHOOK_TLS_KEY is not: set both or neither")
	case certFile == "":
		return nil, errors.New("MEMHOOK_TLS_KEY is set but MEMHOOK_TLS_CERT is not: set both or neither")
	}
	var errs []error
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		errs = append(errs, fmt.Errorf("MEMHOOK_TLS_CERT: %w", err)) // the *PathError names the file
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		errs = append(errs, fmt.Errorf("MEMHOOK_TLS_KEY: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls's messages say which input is wrong ("in certificate
		// input", "in key input", "private key does not match public key")
		// and never quote it.
		return nil, fmt.Errorf("MEMHOOK_TLS_CERT=%q, MEMHOOK_TLS_KEY=%q: %w", certFile, keyFile, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}, nil
}

func serveConfigFrom(lookup func(string) (string, bool)) (serveConfig, error) {
	get := func(name string) string { v, _ := lookup(name); return v }
	sc := serveConfig{
		Addr:            get("MEMHOOK_ADDR"),
		AdminToken:      get("MEMHOOK_ADMIN_TOKEN"),
		IncomingToken:   get("MEMHOOK_INCOMING_TOKEN"),
		LogFormat:       get("MEMHOOK_LOG_FORMAT"),
		LogLevel:        get("MEMHOOK_LOG_LEVEL"),
		CPUProfile:      get("MEMHOOK_CPU_PROFILE"),
		ShutdownTimeout: defaultShutdownTimeout,
		EndpointsFile:   strings.TrimSpace(get("MEMHOOK_ENDPOINTS_FILE")),
		Lookup:          lookup,
	}
	var errs []error
	if sc.Addr == "" {
		sc.Addr = defaultAddr
	}
	host, _, err := net.SplitHostPort(sc.Addr)
	if err != nil {
		errs = append(errs, fmt.Errorf("MEMHOOK_ADDR=%q: not host:port", sc.Addr))
	} else if !isLoopback(host) {
		// Beyond loopback every endpoint that acts must be protected:
		// an open ingest would let anyone have memhook sign and send
		// webhooks in our name.
		if get("MEMHOOK_ADMIN_TOKEN") == "" {
			errs = append(errs, fmt.Errorf("MEMHOOK_ADDR=%q is not a loopback address: set MEMHOOK_ADMIN_TOKEN", sc.Addr))
		}
		for _, p := range [][2]string{{"MEMHOOK_INGEST_TOKEN", "MEMHOOK_INGEST_SECRET"}, {"MEMHOOK_INCOMING_TOKEN", "MEMHOOK_INCOMING_SECRET"}} {
			if get(p[0]) == "" && get(p[1]) == "" {
				errs = append(errs, fmt.Errorf("MEMHOOK_ADDR=%q is not a loopback address: set %s or %s", sc.Addr, p[0], p[1]))
			}
		}
	}
	for _, sv := range []struct {
		name string
		dst  *[]verify.Secret
	}{{"MEMHOOK_INCOMING_SECRET", &sc.IncomingSecrets}, {"MEMHOOK_INGEST_SECRET", &sc.IngestSecrets}} {
		if v := get(sv.name); v != "" {
			secs, err := verify.ParseSecrets(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", sv.name, err)) // never echoes the value
			}
			*sv.dst = secs
		}
	}
	tlsConfig, err := loadTLS(get("MEMHOOK_TLS_CERT"), get("MEMHOOK_TLS_KEY"))
	if err != nil {
		errs = append(errs, err)
	}
	sc.TLS = tlsConfig
	if v := get("MEMHOOK_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := bus.ParseSeconds(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("MEMHOOK_SHUTDOWN_TIMEOUT=%q: must be a positive number of seconds", v))
		} else {
			sc.ShutdownTimeout = d
		}
	}
	return sc, errors.Join(errs...)
}

// isLoopback reports whether host (from MEMHOOK_ADDR) only listens on
// loopback. An empty host listens everywhere.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func serve(args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("memhook serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := newConfig(fs, lookup)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: memhook serve [flags]\n\nRuns the router process. Flags:\n")
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "\nVariables:")
		printSettings(fs.Output())
	}
	if err := c.parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	cfg, err := bus.ConfigFromLookup(c.Lookup)
	sc, serr := serveConfigFrom(c.Lookup)
	if err := errors.Join(err, serr); err != nil { // every problem in one report
		fmt.Fprintf(stderr, "memhook serve: %s\n", oneLine(c.explain(err)))
		return exitUsage
	}
	return serveWith(cfg, sc, stderr)
}

func serveWith(cfg bus.Config, sc serveConfig, stderr io.Writer) int {
	logger, logOut, err := newLogger(stderr, sc.LogFormat, sc.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "memhook serve: %v\n", err)
		return exitUsage
	}
	defer logOut.Close() // runs last: every line is out before the exit code goes to os.Exit
	stderr = logOut      // serve's own messages keep their place among the log lines
	if sc.CPUProfile != "" {
		stopProfile, err := startCPUProfile(sc.CPUProfile)
		if err != nil {
			fmt.Fprintf(stderr, "memhook serve: MEMHOOK_CPU_PROFILE: %v\n", err)
			return exitUsage
		}
		defer stopProfile()
	}
	transport := cfg.Transport
	if cfg.Transport == bus.TransportHTTP {
		// Applications on transport http hand events to this process;
		// it delivers them from its in-process queue.
		cfg.Transport = bus.TransportMemory
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var b *bus.Bus
	metrics := handlers.NewMetrics(func() handlers.Snapshot { return snapshot(b) })
	b, err = bus.New(cfg,
		bus.WithDelivery(), // on Redis: join the consumer group and deliver
		bus.WithLogger(logger),
		bus.WithDeliveryObserver(metrics.ObserveDelivery),
		bus.WithRouterSetup(func(r *message.Router) error {
			wmetrics.NewPrometheusMetricsBuilder(reg, "memhook", "router").AddPrometheusRouterMetrics(r)
			return nil
		}),
	)
	if err != nil {
		fmt.Fprintf(stderr, "memhook serve: %s\n", oneLine(err))
		return exitUsage
	}
	reg.MustRegister(metrics)

	// On Redis the duplicate guard of the event endpoints is shared by
	// every router on it and outlives restarts; elsewhere it is in memory.
	var seen handlers.SeenStore
	guard := "memory"
	if transport == bus.TransportRedis {
		rs, err := transports.NewRedisSeen(cfg.RedisConfig())
		if err != nil {
			_ = b.Close(context.Background())
			fmt.Fprintf(stderr, "memhook serve: %s\n", oneLine(err))
			return exitUsage
		}
		defer rs.Close()
		seen, guard = rs, "redis"
	}

	api := &handlers.API{
		Incoming:        busy(b.Incoming),
		Ingest:          busy(b.Ingest),
		Status:          func() handlers.Status { return status(b, transport) },
		Test:            func(ctx context.Context) handlers.TestResult { return testWebhook(ctx, b) },
		Ready:           b.Ready,
		Metrics:         promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		AdminToken:      sc.AdminToken,
		IncomingToken:   sc.IncomingToken,
		IngestToken:     cfg.IngestToken,
		IncomingSecrets: sc.IncomingSecrets,
		IngestSecrets:   sc.IngestSecrets,
		Seen:            seen,
		Logger:          logger,
	}
	ingestCtx, stopIngest := context.WithCancel(context.Background())
	defer stopIngest()
	h, err := api.Handler(ingestCtx)
	if err != nil {
		fmt.Fprintf(stderr, "memhook serve: %v\n", err)
		return exitFailed
	}
	adminH, err := admin.NewHandler(admin.Config{Bus: b, Token: sc.AdminToken, Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "memhook serve: %v\n", err)
		return exitFailed
	}
	mux := http.NewServeMux()
	mux.Handle(admin.PathPrefix, adminH) // the admin API: everything under /api/
	mux.Handle("/", h)
	dashboard, err := mountDashboard(mux, b, sc.AdminToken, logger)
	if err != nil {
		fmt.Fprintf(stderr, "memhook serve: %v\n", err)
		return exitFailed
	}
	ln, err := net.Listen("tcp", sc.Addr)
	if err != nil {
		_ = b.Close(context.Background())
		fmt.Fprintf(stderr, "memhook serve: cannot listen on %s: %v\n", sc.Addr, err)
		return exitFailed
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		TLSConfig:         sc.TLS,
	}
	fresh := &freshConns{conns: map[net.Conn]struct{}{}}
	srv.ConnState = fresh.track
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	serveErr := make(chan error, 1)
	scheme := "http"
	if sc.TLS != nil {
		scheme = "https"
		go func() { serveErr <- srv.ServeTLS(ln, "", "") }() // the certificate is in TLSConfig
	} else {
		go func() { serveErr <- srv.Serve(ln) }()
	}

	logger.Info("memhook: serving",
		"addr", ln.Addr().String(),
		"url", scheme+"://"+ln.Addr().String(),
		"transport", transport,
		"webhook_url", b.WebhookURL(),
		"webhooks_enabled", b.Enabled(),
		"endpoints", endpointNames(b),
		"events", b.Events().String(),
		"timeout", cfg.Timeout,
		"retry_count", retryCount(cfg),
		"retry_schedule", retrySchedule(cfg),
		"concurrency", cfg.Concurrency,
		"queue_capacity", cfg.QueueCapacity,
		"token", setOrUnset(cfg.Token != ""),
		"secret", setOrUnset(cfg.Secret != ""),
		"legacy_secret_header", !cfg.DisableLegacySecretHeader,
		"admin_token", setOrUnset(sc.AdminToken != ""),
		"incoming_token", setOrUnset(sc.IncomingToken != ""),
		"ingest_token", setOrUnset(cfg.IngestToken != ""),
		"incoming_secret", setOrUnset(len(sc.IncomingSecrets) > 0),
		"ingest_secret", setOrUnset(len(sc.IngestSecrets) > 0),
		"duplicate_guard", guard,
		"dashboard", dashboard,
		"version", bus.Version,
	)

	if transport == bus.TransportRedis && cfg.WebhookURL == "" && len(cfg.Endpoints) == 0 {
		logger.Warn("memhook: transport redis without MEM0_WEBHOOK_URL or endpoints file: this process does not consume the events stream; "+
			"applications' events wait in Redis (up to MEMHOOK_REDIS_MAXLEN) until a router with a webhook URL runs",
			"stream", bus.Topic)
	}

	checkCtx, stopCheck := context.WithCancel(ctx)
	var checking sync.WaitGroup
	if sc.EndpointsFile != "" {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		checking.Go(func() { reloadOnHUP(checkCtx, hup, b, sc, logger) })
	}
	if transport == bus.TransportRedis {
		checking.Go(func() { checkRedisPersistence(checkCtx, logger, b.Config().RedisConfig()) })
	}

	code := exitOK
	select {
	case <-ctx.Done():
		logger.Info("memhook: shutting down: intake stopped, draining deliveries", "timeout", sc.ShutdownTimeout)
	case err := <-serveErr:
		logger.Error("memhook: server failed", "error", err.Error())
		code = exitFailed
	}
	stopCheck()
	checking.Wait()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), sc.ShutdownTimeout)
	defer cancel()
	if err := shutdownServer(shutdownCtx, srv, fresh); err != nil {
		logger.Warn("memhook: open requests cut at shutdown", "error", err.Error())
	}
	stopIngest()
	if err := b.Close(shutdownCtx); err != nil {
		var ue *bus.UndeliveredError
		if errors.As(err, &ue) {
			for _, u := range ue.Events {
				logger.Error("memhook: undelivered at shutdown", "id", u.ID, "event", u.Type, "topic", u.Topic, "payload", string(u.Payload))
			}
			code = exitUndelivered
		} else {
			logger.Error("memhook: shutdown", "error", err.Error())
			code = exitFailed
		}
	}
	s := b.Stats()
	logger.Info("memhook: stopped", "accepted", s.Accepted, "delivered", s.Delivered, "filtered", s.Filtered,
		"poisoned", s.Poisoned, "dropped", s.Dropped, "undelivered", s.Undelivered)
	return code
}

// checkRedisPersistence asks Redis, once it answers, what it persists,
// and warns when a restart of Redis (or of its host) would lose queued
// events, saying what to set; otherwise it logs the settings at INFO. It
// returns once it has checked, or when ctx ends.
func checkRedisPersistence(ctx context.Context, logger *slog.Logger, rcfg transports.RedisConfig) {
	delay := 250 * time.Millisecond
	for {
		p, err := transports.RedisPersistence(ctx, rcfg)
		if err == nil {
			attrs := []any{"url", rcfg.RedactedURL(), "aof", p.AOF, "appendfsync", p.AppendFsync, "save", p.Save, "checked", p.Checked}
			if p.Warning != "" {
				logger.Warn("memhook: Redis may lose queued events: "+p.Warning, attrs...)
			} else {
				logger.Info("memhook: Redis persists the queue", attrs...)
			}
			return
		}
		// Redis unreachable: the bus says so; check once it answers.
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// freshConns tracks the connections that have not sent a byte yet.
// http.Server.Shutdown leaves such a connection open for up to 5 s, in
// case a request is on its way; shutdownServer closes them at once.
type freshConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state == http.StateNew {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		_ = c.Close()
		delete(f.conns, c)
	}
}

// shutdownServer stops srv's listener, waits for the requests in progress
// and closes idle connections (http.Server.Shutdown), closing meanwhile
// every connection that has sent nothing yet, so that a client's unused
// keep-alive connection does not hold the exit.
func shutdownServer(ctx context.Context, srv *http.Server, fresh *freshConns) error {
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		fresh.closeAll()
		select {
		case err := <-done:
			return err
		case <-tick.C:
		}
	}
}

// busy maps bus.ErrQueueFull to handlers.ErrBusy.
func busy(f func(*message.Message) error) func(*message.Message) error {
	return func(m *message.Message) error {
		err := f(m)
		if errors.Is(err, bus.ErrQueueFull) {
			return fmt.Errorf("%w: %w", handlers.ErrBusy, err)
		}
		return err
	}
}

// setOrUnset shows a secret's presence, never its value.
func setOrUnset(set bool) string {
	if set {
		return "set"
	}
	return "unset"
}

// retryCount is the number of retries in effect: MEMHOOK_RETRY_SCHEDULE's
// entries when it is set, else MEM0_WEBHOOK_RETRY_COUNT.
func retryCount(cfg bus.Config) int { return len(cfg.RetryDelays()) }

// retrySchedule writes the schedule in effect as MEMHOOK_RETRY_SCHEDULE
// would say it ("1s,2s,4s" for the seed's defaults), "none" without
// retries.
func retrySchedule(cfg bus.Config) string {
	delays := cfg.RetryDelays()
	if len(delays) == 0 {
		return "none"
	}
	parts := make([]string, len(delays))
	for i, d := range delays {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

func snapshot(b *bus.Bus) handlers.Snapshot {
	if b == nil {
		return handlers.Snapshot{}
	}
	s := b.Stats()
	out := handlers.Snapshot{
		ByType: map[event.Type]handlers.Counts{}, Queued: s.Queued, InFlight: s.InFlight,
		RetriesWaiting: s.RetriesWaiting, OldestRetryDue: s.OldestRetryDue,
	}
	for _, e := range b.EndpointStats() {
		out.Endpoints = append(out.Endpoints, handlers.EndpointCounts{
			Name: e.Name, State: e.State, Delivered: e.Delivered, Retried: e.Retried, Filtered: e.Filtered,
			Poisoned: e.Poisoned, Undelivered: e.Undelivered, Shed: e.Shed, Retrying: e.Retrying, Backlog: e.Backlog,
		})
	}
	for t, c := range b.StatsByType() {
		out.ByType[t] = handlers.Counts{
			Accepted: c.Accepted, Delivered: c.Delivered, Retried: c.Retried, Filtered: c.Filtered,
			Poisoned: c.Poisoned, Dropped: c.Dropped, Undelivered: c.Undelivered,
		}
	}
	return out
}

func status(b *bus.Bus, transport string) handlers.Status {
	cfg := b.Config()
	events := []string{}
	if b.Enabled() {
		for _, t := range b.Events().Types() {
			events = append(events, string(t))
		}
	}
	return handlers.Status{
		Status: "ok",
		WebhookConfig: handlers.WebhookConfig{
			Enabled:       b.Enabled(),
			WebhookURL:    b.WebhookURL(),
			Timeout:       cfg.Timeout.Seconds(),
			RetryCount:    retryCount(cfg),
			EnabledEvents: events,
			HasToken:      cfg.Token != "",
			HasSecret:     cfg.Secret != "",
		},
		Transport: transport,
		Counters:  b.Stats(),
		Endpoints: b.EndpointStats(),
	}
}

// testEvent is the seed's test webhook.
func testEvent() event.Event {
	return event.Event{Type: event.MemoryAdded, UserID: "test_user", Data: map[string]any{"test": true, "content": "Test memory"}}
}

func testWebhook(ctx context.Context, b *bus.Bus) handlers.TestResult {
	res := handlers.TestResult{Status: "ok", WebhookEnabled: b.Enabled(), WebhookURL: b.WebhookURL()}
	if !b.Enabled() {
		res.Error = "webhooks are off: MEM0_WEBHOOK_URL is unset or MEM0_WEBHOOK_EVENTS is none"
		return res
	}
	out, err := b.Send(ctx, testEvent())
	res.TestSent = out.Attempts > 0
	res.Delivered, res.ReceiverStatus, res.Attempts, res.Error = out.Delivered, out.Status, out.Attempts, out.Error
	if out.Filtered {
		res.Error = "memory_added is filtered out by MEM0_WEBHOOK_EVENTS"
	}
	if err != nil {
		res.Status = "error"
		if res.Error == "" {
			res.Error = err.Error()
		}
	} else if !out.Delivered {
		res.Status = "error"
	}
	return res
}

// reloadOnHUP reads the endpoints file again at every SIGHUP and applies
// it (bus.SetEndpoints). A file with a problem changes nothing: the
// endpoints stay as they were, and the problems are logged at ERROR.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, b *bus.Bus, sc serveConfig, logger *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		eps, err := bus.LoadEndpoints(sc.EndpointsFile, sc.Lookup)
		if err != nil {
			logger.Error("memhook: SIGHUP: endpoints file refused, endpoints unchanged", "file", sc.EndpointsFile, "error", oneLine(err))
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, sc.ShutdownTimeout)
		err = b.SetEndpoints(rctx, eps)
		cancel()
		if err != nil {
			logger.Error("memhook: SIGHUP: endpoints reloaded with problems", "file", sc.EndpointsFile, "error", oneLine(err))
			continue
		}
		logger.Info("memhook: SIGHUP: endpoints reloaded", "file", sc.EndpointsFile, "endpoints", endpointNames(b))
	}
}

// endpointNames lists the endpoints b delivers to, comma separated.
func endpointNames(b *bus.Bus) string {
	var names []string
	for _, e := range b.EndpointStats() {
		names = append(names, e.Name)
	}
	return strings.Join(names, ",")
}

// mountDashboard puts the dashboard (admin.NewUI) on mux at admin.UIPath.
// Without an admin token the dashboard is off: its path answers 503
// saying what to set. It returns where the dashboard is, or "off".
func mountDashboard(mux *http.ServeMux, b *bus.Bus, adminToken string, logger *slog.Logger) (string, error) {
	ui, err := admin.NewUI(b, adminToken, logger)
	switch {
	case errors.Is(err, admin.ErrNoAdminToken):
		mux.HandleFunc(admin.UIPath, func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "The dashboard is off: set MEMHOOK_ADMIN_TOKEN and restart memhook serve.", http.StatusServiceUnavailable)
		})
		return "off", nil
	case err != nil:
		return "", err
	}
	mux.Handle(admin.UIPath, ui)
	return admin.UIPath, nil
}
