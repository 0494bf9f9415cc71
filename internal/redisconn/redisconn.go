// Package redisconn turns a Redis URL into a go-redis client that Pulse's
// store and asynq share, and checks that the server suits Pulse.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Timeouts and retries of every connection. They are small so that a call
// fails within about a second when Redis is down, instead of hanging until
// the caller's deadline: go-redis v9.23 would otherwise dial 5 times per
// connection and retry each command 3 times.
const (
	dialTimeout   = 2 * time.Second
	readTimeout   = 3 * time.Second
	writeTimeout  = 3 * time.Second
	dialerRetries = 2
	maxRetries    = 1
)

// Options returns the client options for a Redis URL:
//
//	redis://[user:password@]host:port[/db]       one server
//	rediss://...                                 one server over TLS
//	redis-sentinel://[:password@]host:port[,host:port...][/db]?master=NAME
//	redis-cluster://[user:password@]host:port[,host:port...]
//
// The Sentinel and Cluster forms take every seed address separated by commas.
func Options(rawURL string) (*redis.UniversalOptions, error) {
	if !strings.Contains(rawURL, "://") {
		return nil, fmt.Errorf("redis URL %q has no scheme: write it as redis://host:port/db, such as redis://127.0.0.1:6379/0", rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL is invalid: %w", err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("redis URL %q has no host: expected redis://host:port/db", redactURL(u))
	}

	opts := &redis.UniversalOptions{
		DialTimeout:           dialTimeout,
		ReadTimeout:           readTimeout,
		WriteTimeout:          writeTimeout,
		DialerRetries:         dialerRetries,
		MaxRetries:            maxRetries,
		ContextTimeoutEnabled: true,
	}
	if u.User != nil {
		opts.Username = u.User.Username()
		opts.Password, _ = u.User.Password()
	}
	opts.Addrs = strings.Split(u.Host, ",")
	for _, addr := range opts.Addrs {
		if _, _, err := splitHostPort(addr); err != nil {
			return nil, fmt.Errorf("redis URL %q: address %q is invalid: %w", redactURL(u), addr, err)
		}
	}

	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("redis URL %q: database %q is invalid: it must be a number", redactURL(u), db)
		}
		opts.DB = n
	}

	switch u.Scheme {
	case "redis":
		if len(opts.Addrs) != 1 {
			return nil, fmt.Errorf("redis URL %q names %d addresses: use redis-sentinel:// or redis-cluster:// for several", redactURL(u), len(opts.Addrs))
		}
	case "rediss":
		if len(opts.Addrs) != 1 {
			return nil, fmt.Errorf("redis URL %q names %d addresses: rediss:// takes one", redactURL(u), len(opts.Addrs))
		}
		host, _, _ := splitHostPort(opts.Addrs[0])
		opts.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	case "redis-sentinel":
		opts.MasterName = u.Query().Get("master")
		if opts.MasterName == "" {
			return nil, fmt.Errorf("redis URL %q: the master query parameter is missing: add ?master=NAME", redactURL(u))
		}
		// A password in the URL authenticates to the master and replicas;
		// sentinel_password, if set, authenticates to the sentinels.
		opts.SentinelPassword = u.Query().Get("sentinel_password")
	case "redis-cluster":
		if opts.DB != 0 {
			return nil, fmt.Errorf("redis URL %q: Redis Cluster has only database 0", redactURL(u))
		}
		opts.IsClusterMode = true
	default:
		return nil, fmt.Errorf("redis URL scheme %q is not supported: use redis, rediss, redis-sentinel or redis-cluster", u.Scheme)
	}
	return opts, nil
}

// NewClient returns a client for a Redis URL (see Options).
func NewClient(rawURL string) (redis.UniversalClient, error) {
	opts, err := Options(rawURL)
	if err != nil {
		return nil, err
	}
	if opts.IsClusterMode {
		return newClusterClient(opts), nil
	}
	return redis.NewUniversalClient(opts), nil
}

// Redact returns the URL with any password replaced, for logs and errors.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return redactURL(u)
}

func redactURL(u *url.URL) string {
	return u.Redacted()
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndex(addr, ":")
	if i <= 0 {
		return "", 0, errors.New("expected host:port")
	}
	port, err := strconv.Atoi(addr[i+1:])
	if err != nil || port < 1 || port > 65535 {
		return "", 0, errors.New("port must be a number from 1 to 65535")
	}
	return addr[:i], port, nil
}

// ErrEvictionPolicy means Redis may evict keys, which would silently lose
// schedules.
var ErrEvictionPolicy = errors.New("redis may evict Pulse's keys")

// CheckEvictionPolicy returns ErrEvictionPolicy unless every master's
// maxmemory-policy is noeviction. It reads INFO, which managed Redis
// services allow even where CONFIG is disabled.
func CheckEvictionPolicy(ctx context.Context, rdb redis.UniversalClient) error {
	check := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "memory").Result()
		if err != nil {
			return fmt.Errorf("read maxmemory-policy of %s: %w", c.Options().Addr, err)
		}
		policy := infoField(info, "maxmemory_policy")
		if policy != "noeviction" {
			return fmt.Errorf("%w: %s has maxmemory-policy %q; set it to noeviction (CONFIG SET maxmemory-policy noeviction), or start Pulse with --allow-eviction to accept losing schedules",
				ErrEvictionPolicy, c.Options().Addr, policy)
		}
		return nil
	}

	switch c := rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, check)
	case *redis.Client:
		return check(ctx, c)
	default:
		return fmt.Errorf("unsupported Redis client type %T", rdb)
	}
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// Shared is an asynq.RedisConnOpt that hands out an existing client instead
// of opening a connection of its own, so that a library that takes a
// RedisConnOpt, such as asynqmon, shares the process's client and works
// with every Redis form that Pulse supports, including the embedded one.
//
// The client stays the process's: a library that closes the client it made
// (asynqmon's HTTPHandler.Close) would close it for the whole process, so
// such a Close must never be called.
type Shared struct {
	Client redis.UniversalClient
}

// MakeRedisClient returns the shared client. It implements
// asynq.RedisConnOpt.
func (s Shared) MakeRedisClient() interface{} {
	return s.Client
}
