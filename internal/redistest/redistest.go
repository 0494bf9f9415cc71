// Package redistest starts throwaway redis-server processes for tests.
//
// Each server listens on a free loopback port (never 6379), keeps its files in
// the test's temporary directory and is stopped when the test ends, so tests
// never touch a shared Redis. StartCluster and StartSentinel start a Redis
// Cluster and a Sentinel-monitored master the same way.
package redistest

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pulse-sched/pulse/internal/redisproc"
)

// Options changes how a server starts. The zero value starts a server that
// keeps nothing on disk and never evicts keys.
type Options struct {
	// AppendOnly turns on the AOF with appendfsync everysec, so data survives
	// Restart.
	AppendOnly bool
	// Args are extra redis-server arguments, such as "--maxmemory-policy",
	// "allkeys-lru".
	Args []string
}

// Server is a redis-server process owned by one test.
type Server struct {
	t    testing.TB
	proc *redisproc.Server
}

// Start starts a redis-server with default options and stops it at the end of
// the test. The test fails when redis-server is not installed.
func Start(t testing.TB) *Server {
	return StartWithOptions(t, Options{})
}

// StartWithOptions starts a redis-server with opts and stops it at the end of
// the test.
func StartWithOptions(t testing.TB, opts Options) *Server {
	t.Helper()
	proc, err := redisproc.Start(redisproc.Options{Dir: t.TempDir(), AppendOnly: opts.AppendOnly, Args: opts.Args})
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s := &Server{t: t, proc: proc}
	t.Cleanup(s.Stop)
	return s
}

// FreePort returns a loopback TCP port that was free a moment ago. It never
// returns 6379.
func FreePort() (int, error) {
	return redisproc.FreePort()
}

// Addr returns the server's host:port on loopback.
func (s *Server) Addr() string { return s.proc.Addr() }

// URL returns the server's address as a redis:// URL for database 0.
func (s *Server) URL() string { return s.proc.URL() }

// Client returns a new client of the server, closed at the end of the test.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Stop shuts the server down. Calling Stop on a stopped server does nothing.
func (s *Server) Stop() { s.proc.Stop() }

// Kill stops the server with SIGKILL, so it cannot flush anything.
func (s *Server) Kill() { s.proc.Kill() }

// Restart stops the server and starts it again on the same port with the same
// data directory. With AppendOnly set the data survives.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.proc.Restart(); err != nil {
		s.t.Fatalf("restart redis-server on %s: %v", s.Addr(), err)
	}
}

// Start starts a stopped server again on the same port.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.proc.Launch(); err != nil {
		s.t.Fatalf("start redis-server on %s: %v", s.Addr(), err)
	}
}
