package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated means a change was written to the Redis master but fewer
// replicas than Config.WaitReplicas confirmed it within Config.WaitTimeout.
// The change is in place on the master, and it survives unless the master
// fails before a replica copies it.
var ErrNotReplicated = errors.New("change not confirmed by enough replicas")

// WaitTimeoutDefault is the default of Config.WaitTimeout.
const WaitTimeoutDefault = time.Second

// runMutation runs a script that changes the schedule at key. With
// Config.WaitReplicas set, it sends Redis WAIT right after the script on the
// same connection, because WAIT covers only the writes of its own
// connection. When too few replicas confirm the change in time, it returns
// the script's result with ErrNotReplicated.
func (s *Store) runMutation(ctx context.Context, script *redis.Script, key string, keys []string, args ...any) (any, error) {
	if s.cfg.WaitReplicas == 0 {
		return script.Run(ctx, s.rdb, keys, args...).Result()
	}

	node, err := s.masterFor(ctx, key)
	if err != nil {
		return nil, err
	}
	run := func() (*redis.Cmd, *redis.Cmd, error) {
		var scriptCmd *redis.Cmd
		var waitCmd *redis.Cmd
		_, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
			scriptCmd = script.EvalSha(ctx, p, keys, args...)
			waitCmd = p.Do(ctx, "WAIT", s.cfg.WaitReplicas, s.cfg.WaitTimeout.Milliseconds())
			return nil
		})
		return scriptCmd, waitCmd, err
	}
	scriptCmd, waitCmd, err := run()
	if err != nil && redis.HasErrorPrefix(scriptCmd.Err(), "NOSCRIPT") {
		if err := script.Load(ctx, node).Err(); err != nil {
			return nil, err
		}
		scriptCmd, waitCmd, err = run()
	}
	if err := scriptCmd.Err(); err != nil {
		return nil, err
	}
	if err != nil {
		return scriptCmd.Val(), err
	}
	acked, err := waitCmd.Int64()
	if err != nil {
		return scriptCmd.Val(), fmt.Errorf("wait for replicas: %w", err)
	}
	if acked < int64(s.cfg.WaitReplicas) {
		return scriptCmd.Val(), fmt.Errorf("%w: %d of %d replicas confirmed within %s",
			ErrNotReplicated, acked, s.cfg.WaitReplicas, s.cfg.WaitTimeout)
	}
	return scriptCmd.Val(), nil
}

// masterFor returns the client of the one master that holds key.
func (s *Store) masterFor(ctx context.Context, key string) (*redis.Client, error) {
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("find the master of %s: %w", key, err)
		}
		return node, nil
	case *redis.Client:
		return c, nil
	default:
		return nil, fmt.Errorf("waiting for replicas needs a Redis client or cluster client, not %T", s.rdb)
	}
}
