package plugine2e

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/client"
	"github.com/pulse-sched/pulse/worker"
)

// acceptOnly listens on loopback and accepts connections until the test
// ends. With hold it keeps them open without writing a byte, else it closes
// each at once.
func acceptOnly(t *testing.T, hold bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			if !hold {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	return lis.Addr().String()
}

// TestMisbehavingPluginsAreIsolated runs the schedules of a healthy plugin
// beside plugins that hang, are down or do not speak gRPC. Together the
// hanging ones have more schedules than the worker has places, so without
// the per-endpoint limit they would delay the healthy plugin's slots.
func TestMisbehavingPluginsAreIsolated(t *testing.T) {
	if testing.Short() {
		t.Skip("runs schedules for about 7 seconds")
	}
	const (
		concurrency       = 6
		pluginConcurrency = 2
		hangingSchedules  = 4 // per hanging plugin
		healthyRuns       = 5 // per healthy schedule
		maxLateness       = time.Second
	)

	healthy := &fakePlugin{}
	healthyAddr := healthy.serve(t, map[string]client.HandlerFunc{
		"work": func(context.Context, *client.Request) error { return nil },
	})
	slow := &fakePlugin{}
	slowAddr := slow.serve(t, map[string]client.HandlerFunc{"work": hang(t)})
	http1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("this is not gRPC"))
	}))
	t.Cleanup(http1.Close)

	bad := []struct {
		plugin plugin
		count  int
		// wantErr holds alternatives: the error must contain one of them.
		wantErr []string
	}{
		{plugin{"slow", slowAddr}, hangingSchedules, []string{"timed out: no response within the attempt's timeout"}},
		// A server that never responds times the call out. Once gRPC gives
		// up the connection (after 5s), calls fail at once.
		{plugin{"silent", acceptOnly(t, true)}, hangingSchedules, []string{"timed out: no response within the attempt's timeout", "error reading server preface"}},
		{plugin{"down", closedAddr(t)}, 1, []string{"Unavailable: connection error", "connection refused"}},
		{plugin{"http1", http1.Listener.Addr().String()}, 1, []string{"looked like an HTTP/1.1 header"}},
		{plugin{"closer", acceptOnly(t, false)}, 1, []string{"Unavailable"}},
	}
	plugins := []plugin{{"healthy", healthyAddr}}
	for _, b := range bad {
		plugins = append(plugins, b.plugin)
	}
	e := startEnv(t, envConfig{
		plugins: plugins,
		worker:  worker.Config{Concurrency: concurrency, PluginConcurrency: pluginConcurrency},
	})

	// The misbehaving schedules first, so that they hold their places when
	// the healthy ones start.
	badIDs := map[string][]string{}
	for _, b := range bad {
		for range b.count {
			badIDs[b.plugin.atsCode] = append(badIDs[b.plugin.atsCode], e.create(t, b.plugin.atsCode, client.ScheduleSpec{
				Handler: "work", Interval: time.Second, RunImmediately: true,
				Timeout: 2 * time.Second, MaxRetries: ptr(0),
			}))
		}
	}
	var healthyIDs []string
	for range 2 {
		healthyIDs = append(healthyIDs, e.create(t, "healthy", client.ScheduleSpec{
			Handler: "work", Interval: time.Second, RunImmediately: true,
		}))
	}

	require.True(t, assertEventually(func() bool {
		for _, id := range healthyIDs {
			if len(healthy.of(id)) < healthyRuns {
				return false
			}
		}
		return true
	}), "the healthy plugin's schedules did not run %d times", healthyRuns)

	t.Run("the healthy plugin is not delayed", func(t *testing.T) {
		for _, id := range healthyIDs {
			calls := healthy.of(id)
			for i, c := range calls {
				lateness := c.at.Sub(c.req.Slot)
				require.Lessf(t, lateness, maxLateness, "schedule %s: slot %s started %s late", id, c.req.Slot, lateness)
				if i > 0 {
					require.Equal(t, calls[i-1].req.Slot.Add(time.Second), c.req.Slot, "schedule %s skipped a slot", id)
				}
			}
			job := e.get(t, "healthy", id)
			require.Zero(t, job.GetSkippedSlots())
			require.Zero(t, job.GetConsecutiveFailures())
		}
	})

	t.Run("each endpoint runs at most its limit at once", func(t *testing.T) {
		// Each call to the slow plugin holds its place for the 2s timeout,
		// so no more than the limit can arrive within less than that.
		require.Equal(t, pluginConcurrency, slow.peakArrivals(1500*time.Millisecond))
		require.Greater(t, slow.count(), pluginConcurrency, "the slow plugin's schedules never took turns")
	})

	t.Run("every failure is recorded with a clear error", func(t *testing.T) {
		for _, b := range bad {
			for _, id := range badIDs[b.plugin.atsCode] {
				if b.count > pluginConcurrency && e.get(t, b.plugin.atsCode, id).GetTotalRuns() == 0 {
					continue // still waiting for a place: it ran nothing yet
				}
				job := e.waitJob(t, b.plugin.atsCode, id, "records a failure", func(j *client.Job) bool {
					return j.GetLastStatus() == "failed"
				})
				require.Contains(t, job.GetLastError(), worker.PluginCallErrorPrefix+"grpc://"+b.plugin.endpoint, b.plugin.atsCode)
				require.Truef(t, slices.ContainsFunc(b.wantErr, func(part string) bool {
					return strings.Contains(job.GetLastError(), part)
				}), "%s: last_error %q contains none of %q", b.plugin.atsCode, job.GetLastError(), b.wantErr)
			}
		}
	})
}
