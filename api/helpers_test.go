package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/pulse-sched/pulse/internal/metrics"
	"github.com/pulse-sched/pulse/proto/protocolpb"
	"github.com/pulse-sched/pulse/store"
)

// Tokens of the test registry. Only their SHA-256 digests are in the YAML.
const (
	alphaToken = "alpha-token-0123456789"
	betaToken  = "beta-token-0123456789"
	adminToken = "admin-token-0123456789"

	alphaEndpoint = "grpc://alpha.plugins.internal:9000"
	betaEndpoint  = "grpc://beta.plugins.internal:9000"
)

func testRegistryYAML() []byte {
	return []byte(fmt.Sprintf(`plugins:
  - ats_code: alpha
    token_sha256: %s
    endpoint: %s
  - ats_code: beta
    token_sha256: %s
    endpoint: %s
admins:
  - name: ops
    token_sha256: %s
`, TokenDigest(alphaToken), alphaEndpoint, TokenDigest(betaToken), betaEndpoint, TokenDigest(adminToken)))
}

func newTestRegistry(t *testing.T) *Registry {
	t.Helper()
	r := NewRegistry()
	require.NoError(t, r.Load(testRegistryYAML()))
	return r
}

// prefixCounter gives every test store a key prefix of its own.
var prefixCounter atomic.Int64

// newTestService returns a Service on an initialized store of rdb with a key
// prefix of its own.
func newTestService(t *testing.T, rdb redis.UniversalClient) (*Service, *store.Store) {
	t.Helper()
	st, err := store.New(rdb, store.Config{Prefix: fmt.Sprintf("apitest%d", prefixCounter.Add(1)), Partitions: 4})
	require.NoError(t, err)
	require.NoError(t, st.Init(testContext(t)))

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := NewService(st, newTestRegistry(t), Config{}, logger, metrics.NewUnregistered())
	require.NoError(t, err)
	return svc, st
}

// testContext returns a context that ends with the test or after 30s, so a
// stuck call fails the test instead of hanging it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func validCreateRequest() *protocolpb.CreateScheduleRequest {
	return &protocolpb.CreateScheduleRequest{
		AuthToken:       alphaToken,
		HandlerName:     "reports.daily",
		IntervalSeconds: 3600,
		Payload:         []byte("payload"),
		Metadata:        map[string]string{"team": "billing"},
	}
}

// createSchedule creates a schedule with req and returns its ID.
func createSchedule(t *testing.T, svc *Service, req *protocolpb.CreateScheduleRequest) string {
	t.Helper()
	resp, err := svc.CreateSchedule(testContext(t), req)
	require.NoError(t, err)
	require.True(t, resp.GetSuccess(), "create failed: %s %s", resp.GetErrorCode(), resp.GetError())
	require.Empty(t, resp.GetErrorCode())
	require.Empty(t, resp.GetError())
	return resp.GetScheduleId()
}

func getJob(t *testing.T, svc *Service, token, id string) *protocolpb.ScheduledJob {
	t.Helper()
	resp, err := svc.GetSchedule(testContext(t), &protocolpb.GetScheduleRequest{AuthToken: token, ScheduleId: id})
	require.NoError(t, err)
	require.True(t, resp.GetSuccess(), "get failed: %s %s", resp.GetErrorCode(), resp.GetError())
	return resp.GetJob()
}

// inBandResponse is what every ScheduleService response has in common.
type inBandResponse interface {
	GetSuccess() bool
	GetError() string
	GetErrorCode() string
}

func requireOK(t *testing.T, resp inBandResponse, err error) {
	t.Helper()
	require.NoError(t, err)
	require.True(t, resp.GetSuccess(), "call failed: %s %s", resp.GetErrorCode(), resp.GetError())
	require.Empty(t, resp.GetErrorCode())
	require.Empty(t, resp.GetError())
}

// dataset returns every key of Redis with its type, serialized value and
// whether it has a TTL, so two calls show whether anything was written in
// between.
func dataset(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	ctx := testContext(t)
	keys, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	sort.Strings(keys)

	out := make(map[string]string, len(keys))
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		require.NoError(t, err)
		dump, err := rdb.Dump(ctx, k).Result()
		require.NoError(t, err)
		ttl, err := rdb.PTTL(ctx, k).Result()
		require.NoError(t, err)
		out[k] = fmt.Sprintf("%s ttl=%t %q", typ, ttl >= 0, dump)
	}
	return out
}

func dbSize(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	n, err := rdb.DBSize(testContext(t)).Result()
	require.NoError(t, err)
	return n
}
