// Package admin serves Pulse's HTTP admin endpoints: /healthz (the process
// is alive), /readyz (Redis responds and every role has started), /metrics
// (Prometheus) and, in processes that run the API, /monitoring (the asynq
// web console, for admin tokens).
package admin

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition; it returns nil when ready.
type Check func(ctx context.Context) error

// Handler routes the admin endpoints. Add readiness checks with AddCheck.
type Handler struct {
	mux      *http.ServeMux
	gatherer prometheus.Gatherer

	mu     sync.RWMutex
	checks map[string]Check
}

// NewHandler returns the admin endpoints, exporting gatherer on /metrics.
func NewHandler(gatherer prometheus.Gatherer) *Handler {
	h := &Handler{mux: http.NewServeMux(), gatherer: gatherer, checks: map[string]Check{}}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	h.mux.HandleFunc("GET /readyz", h.serveReady)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return h
}

// AddCheck adds a readiness condition named name.
func (h *Handler) AddCheck(name string, check Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = check
}

// Handle mounts another handler, such as asynqmon, under pattern.
func (h *Handler) Handle(pattern string, handler http.Handler) {
	h.mux.Handle(pattern, handler)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// serveReady responds 200 when every check passes, else 503 with one line per
// failed check.
func (h *Handler) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()

	h.mu.RLock()
	defer h.mu.RUnlock()
	var failed []string
	for name, check := range h.checks {
		if err := check(ctx); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, line := range failed {
			fmt.Fprintln(w, line)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}
