package api

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/internal/redisconn"
	"github.com/pulse-sched/pulse/internal/redistest"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// productionClient returns a client built as the pulse binary builds it,
// with short network timeouts and the caller's context deadline applied to
// every call.
func productionClient(t *testing.T, url string) redis.UniversalClient {
	t.Helper()
	rdb, err := redisconn.NewClient(url)
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// infrastructureCalls returns one call of each ScheduleService method, on
// schedule id.
func infrastructureCalls(svc *Service, id string) map[string]func(context.Context) error {
	return map[string]func(context.Context) error{
		"create": func(ctx context.Context) error {
			_, err := svc.CreateSchedule(ctx, validCreateRequest())
			return err
		},
		"get": func(ctx context.Context) error {
			_, err := svc.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
			return err
		},
		"pause": func(ctx context.Context) error {
			_, err := svc.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
			return err
		},
		"resume": func(ctx context.Context) error {
			_, err := svc.ResumeSchedule(ctx, &protocolpb.ResumeScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
			return err
		},
		"delete": func(ctx context.Context) error {
			_, err := svc.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: alphaToken, ScheduleId: id})
			return err
		},
	}
}

// requireInfrastructureStatus runs call with a deadline of timeout, or with
// no deadline when timeout is 0, and checks that it returns UNAVAILABLE or
// DEADLINE_EXCEEDED as a gRPC status within limit.
func requireInfrastructureStatus(t *testing.T, call func(context.Context) error, timeout, limit time.Duration) codes.Code {
	t.Helper()
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	start := time.Now()
	err := call(ctx)
	elapsed := time.Since(start)

	require.Error(t, err, "a Redis failure must not look like success")
	st, ok := status.FromError(err)
	require.True(t, ok, "error %v is not a gRPC status", err)
	require.Contains(t, []codes.Code{codes.Unavailable, codes.DeadlineExceeded}, st.Code(), "status %v", st)
	require.Less(t, elapsed, limit, "call took %s", elapsed)
	return st.Code()
}

func TestServiceRedisStopped(t *testing.T) {
	srv := redistest.Start(t)
	svc, _ := newTestService(t, productionClient(t, srv.URL()))
	id := createSchedule(t, svc, validCreateRequest())
	srv.Stop()
	calls := infrastructureCalls(svc, id)

	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			requireInfrastructureStatus(t, call, 3*time.Second, 4*time.Second)
		})
	}

	// With a deadline longer than the time the client takes to give up on
	// the refused connections, the failure must read as UNAVAILABLE.
	for name, call := range calls {
		t.Run(name+" long deadline", func(t *testing.T) {
			code := requireInfrastructureStatus(t, call, 30*time.Second, RequestTimeoutDefault+time.Second)
			require.Equal(t, codes.Unavailable, code)
		})
	}

	t.Run("short caller deadline", func(t *testing.T) {
		code := requireInfrastructureStatus(t, calls["get"], 50*time.Millisecond, time.Second)
		t.Logf("status %v", code)
	})
}

// startSilentServer accepts TCP connections on loopback and never replies,
// like a Redis that hangs. It stops at the end of the test.
func startSilentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "redis://" + l.Addr().String() + "/0"
}

func TestServiceRedisSilent(t *testing.T) {
	// The store skips Init, which would hang as well. Every call below must
	// fail anyway.
	st, err := store.New(productionClient(t, startSilentServer(t)), store.Config{Prefix: "silent", Partitions: 4})
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	const requestTimeout = time.Second
	svc, err := NewService(st, newTestRegistry(t), Config{RequestTimeout: requestTimeout}, logger, metrics.NewUnregistered())
	require.NoError(t, err)
	calls := infrastructureCalls(svc, ulid.Make().String())

	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			code := requireInfrastructureStatus(t, call, 500*time.Millisecond, 1500*time.Millisecond)
			require.Equal(t, codes.DeadlineExceeded, code, "a call whose deadline passes must be DEADLINE_EXCEEDED")
		})
	}

	// Without a caller deadline the request timeout bounds the call.
	for name, call := range calls {
		t.Run(name+" no deadline", func(t *testing.T) {
			requireInfrastructureStatus(t, call, 0, requestTimeout+time.Second)
		})
	}
}
