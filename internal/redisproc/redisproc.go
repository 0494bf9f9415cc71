// Package redisproc starts and stops redis-server processes on loopback
// ports. Tests use it through internal/redistest, and the benchmark program
// uses it directly, so it does not depend on package testing.
package redisproc

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
	"time"

	"github.com/redis/go-redis/v9"
)

// StartTimeout bounds how long a server may take to accept PING.
const StartTimeout = 10 * time.Second

// stopTimeout bounds how long a server may take to exit after SIGTERM before
// it gets SIGKILL.
const stopTimeout = 10 * time.Second

// Options sets up one server.
type Options struct {
	// Dir keeps the server's log, configuration and data files. Required.
	Dir string
	// Port is the port to listen on; zero picks a free one (never 6379).
	Port int
	// AppendOnly turns on the AOF with appendfsync everysec, so data survives
	// Restart.
	AppendOnly bool
	// Sentinel runs the server as a Redis Sentinel. ConfigFile is then
	// required, because a sentinel rewrites its configuration file.
	Sentinel bool
	// ConfigFile is passed as the first argument when set.
	ConfigFile string
	// Args are extra redis-server arguments, such as "--maxmemory-policy",
	// "allkeys-lru".
	Args []string
}

// Server is one redis-server process.
type Server struct {
	opts Options

	mu      sync.Mutex
	process *os.Process
	exited  chan struct{} // closed when the running process has exited
}

// Start starts a server and waits until it replies to PING. With a zero port
// it tries up to five free ports, in case another program takes one first.
func Start(opts Options) (*Server, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server is not installed: %w (install it with apt-get install redis-server)", err)
	}
	if opts.Dir == "" {
		return nil, errors.New("redisproc: Options.Dir is required")
	}
	if opts.Sentinel && opts.ConfigFile == "" {
		return nil, errors.New("redisproc: a sentinel needs Options.ConfigFile")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}

	attempts := 1
	if opts.Port == 0 {
		attempts = 5
	}
	pickPort := opts.Port == 0
	var lastErr error
	for attempt := 0; attempt < attempts; attempt++ {
		if pickPort {
			port, err := FreePort()
			if err != nil {
				return nil, fmt.Errorf("find a free port: %w", err)
			}
			opts.Port = port
		}
		s := &Server{opts: opts}
		if lastErr = s.launch(); lastErr == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

// FreePort returns a loopback TCP port that was free a moment ago. It never
// returns 6379 or the sentinel port 26379.
func FreePort() (int, error) {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port != 6379 && port != 26379 {
			return port, nil
		}
	}
}

// Port returns the port the server listens on.
func (s *Server) Port() int { return s.opts.Port }

// Dir returns the server's directory.
func (s *Server) Dir() string { return s.opts.Dir }

// Addr returns the server's host:port on loopback.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.opts.Port))
}

// URL returns the server's address as a redis:// URL for database 0.
func (s *Server) URL() string {
	return "redis://" + s.Addr() + "/0"
}

// PID returns the process ID, or 0 while the server is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.process == nil {
		return 0
	}
	return s.process.Pid
}

// Running reports whether the server process runs.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.process != nil
}

// Stop shuts the server down with SIGTERM, which makes Redis flush its AOF,
// and with SIGKILL if it has not exited after 10s. Stopping a stopped server
// does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.process == nil {
		return
	}
	_ = s.process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
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

// Restart stops the server if it runs and starts it again on the same port
// with the same directory.
func (s *Server) Restart() error {
	s.Stop()
	return s.launch()
}

// Launch starts a stopped server again on the same port with the same
// directory. It fails when the server runs.
func (s *Server) Launch() error {
	return s.launch()
}

func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.process != nil {
		return errors.New("server is already running")
	}

	var args []string
	if s.opts.ConfigFile != "" {
		args = append(args, s.opts.ConfigFile)
	}
	if s.opts.Sentinel {
		args = append(args, "--sentinel")
	}
	args = append(args,
		"--port", strconv.Itoa(s.opts.Port),
		"--bind", "127.0.0.1",
		"--dir", s.opts.Dir,
	)
	if !s.opts.Sentinel {
		args = append(args, "--save", "", "--maxmemory-policy", "noeviction")
		if s.opts.AppendOnly {
			args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
		} else {
			args = append(args, "--appendonly", "no")
		}
	}
	args = append(args, s.opts.Args...)

	cmd := exec.Command("redis-server", args...)
	logPath := filepath.Join(s.opts.Dir, "redis.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
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
		log, _ := os.ReadFile(logPath)
		return fmt.Errorf("%w; server log:\n%s", err, log)
	}

	s.process = cmd.Process
	s.exited = exited
	return nil
}

func waitForPing(addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()

	deadline := time.Now().Add(StartTimeout)
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
	return fmt.Errorf("redis-server on %s did not respond to PING within %s", addr, StartTimeout)
}
