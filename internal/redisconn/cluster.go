package redisconn

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterStateReloadInterval is the maximum age of a cluster client's slot
// map before the next command reloads it. go-redis v9.23 reloads the map by
// itself only on MOVED and READONLY replies, or every 60s by default. A dead
// master sends neither, so without this setting commands for its slots would
// fail for up to a minute after its replica took over.
const clusterStateReloadInterval = 2 * time.Second

// newClusterClient returns a cluster client that also reloads its slot map
// as soon as a command fails with a network error, which is how a master's
// death shows.
func newClusterClient(opts *redis.UniversalOptions) *redis.ClusterClient {
	clusterOpts := opts.Cluster()
	clusterOpts.ClusterStateReloadInterval = clusterStateReloadInterval
	c := redis.NewClusterClient(clusterOpts)
	c.AddHook(reloadOnNetworkError{client: c})
	return c
}

// reloadOnNetworkError makes the cluster client reload its slot map after a
// network error. The reload runs in the background, at most once every 200ms
// (the cooldown of go-redis v9.23's LazyReload).
type reloadOnNetworkError struct {
	client *redis.ClusterClient
}

func (h reloadOnNetworkError) DialHook(next redis.DialHook) redis.DialHook {
	return next
}

func (h reloadOnNetworkError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(err)
		return err
	}
}

func (h reloadOnNetworkError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.check(err)
		return err
	}
}

func (h reloadOnNetworkError) check(err error) {
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		h.client.ReloadState(context.Background())
	}
}
