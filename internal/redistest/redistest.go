// Package redistest starts throwaway redis-server processes for tests.
//
// Each server listens on a free loopback port (never 6379), keeps its files in
// the test's temporary directory and is stopped when the test ends, so tests
// never touch a shared Redis.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a server may take to accept PING.
const startTimeout = 10 * time.Second

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
	opts Options
	dir  string
	port int

	mu      sync.Mutex
	process *os.Process
	exited  chan struct{} // closed when the running process has exited
}

// Start starts a redis-server with default options and stops it at the end of
// the test. The test is skipped when redis-server is not installed.
func Start(t testing.TB) *Server {
	return StartWithOptions(t, Options{})
}

// StartWithOptions starts a redis-server with opts and stops it at the end of
// the test.
func StartWithOptions(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed: %v (install it with apt-get install redis-server)", err)
	}

	s := &Server{t: t, opts: opts, dir: t.TempDir()}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		s.port = port
		if lastErr = s.launch(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("start redis-server: %v", lastErr)
	return nil
}

// FreePort returns a loopback TCP port that was free a moment ago. It never
// returns 6379.
func FreePort() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 6379 {
			return port, nil
		}
	}
}

// Addr returns the server's host:port on loopback.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// URL returns the server's address as a redis:// URL for database 0.
func (s *Server) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// Client returns a new client of the server, closed at the end of the test.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Stop shuts the server down. Calling Stop on a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.process == nil {
		return
	}
	// SIGTERM makes Redis flush the AOF before it exits.
	_ = s.process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.process.Kill()
		<-s.exited
	}
	s.process = nil
}

// Kill stops the server with SIGKILL, so it cannot flush anything.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.process == nil {
		return
	}
	_ = s.process.Kill()
	<-s.exited
	s.process = nil
}

// Restart stops the server and starts it again on the same port with the same
// data directory. With AppendOnly set the data survives.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.launch(); err != nil {
		s.t.Fatalf("restart redis-server on port %d: %v", s.port, err)
	}
}

// Start starts a stopped server again on the same port.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.launch(); err != nil {
		s.t.Fatalf("start redis-server on port %d: %v", s.port, err)
	}
}

func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.process != nil {
		return errors.New("server is already running")
	}

	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--maxmemory-policy", "noeviction",
	}
	if s.opts.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	} else {
		args = append(args, "--appendonly", "no")
	}
	args = append(args, s.opts.Args...)

	cmd := exec.Command("redis-server", args...)
	logFile, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return err
	}

	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	if err := waitForPing(s.Addr(), exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("%w; server log:\n%s", err, log)
	}

	s.process = cmd.Process
	s.exited = exited
	return nil
}

func waitForPing(addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()

	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("redis-server exited before it accepted connections")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not answer PING within %s", addr, startTimeout)
}
