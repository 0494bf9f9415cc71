package worker

import (
	"crypto/x509"
	"fmt"
	"time"
)

// Config sets up a Worker. The zero value of each field means its default.
type Config struct {
	// Concurrency is the number of handlers that run at once. Default 20.
	Concurrency int
	// Queue is the asynq queue that slot tasks come from. Default "pulse".
	Queue string
	// PollInterval is the time between two checks of an empty queue, and so
	// bounds the delay from enqueue to start when the worker is idle. After
	// finding the queue empty, asynq v0.25.1 dequeues nothing for between
	// half and 1.5 times this, so a worker whose queue runs empty now and
	// then delays the next slots by up to that much. Default 20ms.
	PollInterval time.Duration
	// RunningLeaseGrace is added to a task's timeout to make the lease of the
	// schedule's running marker, which outlives a worker that dies mid-run.
	// Default 10s.
	RunningLeaseGrace time.Duration
	// DrainTimeout is how long a stopping worker lets running handlers
	// finish before it cancels them; asynq then delivers their tasks again.
	// Default 10s.
	DrainTimeout time.Duration
	// PluginConcurrency bounds the executions of one plugin endpoint that
	// run at once in this worker, so that a slow or hanging plugin cannot
	// take every place of Concurrency. The slots beyond it wait without
	// holding a place. Default a quarter of Concurrency, at least 1.
	PluginConcurrency int
	// PluginIdleTimeout closes the connection to a plugin endpoint that no
	// execution used for that long. Default 5m.
	PluginIdleTimeout time.Duration
	// PluginRootCAs verifies the certificates of grpcs:// plugin endpoints;
	// nil means the system's roots.
	PluginRootCAs *x509.CertPool
}

// Defaults of Config.
const (
	ConcurrencyDefault       = 20
	QueueDefault             = "pulse"
	PollIntervalDefault      = 20 * time.Millisecond
	RunningLeaseGraceDefault = 10 * time.Second
	DrainTimeoutDefault      = 10 * time.Second
	PluginIdleTimeoutDefault = 5 * time.Minute
)

func (c Config) withDefaults() Config {
	if c.Concurrency == 0 {
		c.Concurrency = ConcurrencyDefault
	}
	if c.Queue == "" {
		c.Queue = QueueDefault
	}
	if c.PollInterval == 0 {
		c.PollInterval = PollIntervalDefault
	}
	if c.RunningLeaseGrace == 0 {
		c.RunningLeaseGrace = RunningLeaseGraceDefault
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DrainTimeoutDefault
	}
	if c.PluginConcurrency == 0 {
		c.PluginConcurrency = max(1, c.Concurrency/4)
	}
	if c.PluginIdleTimeout == 0 {
		c.PluginIdleTimeout = PluginIdleTimeoutDefault
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency %d is invalid: it must be at least 1", c.Concurrency)
	case c.PollInterval < time.Millisecond:
		return fmt.Errorf("poll interval %s is too short: it must be at least 1ms", c.PollInterval)
	case c.RunningLeaseGrace < time.Second:
		return fmt.Errorf("running lease grace %s is too short: it must be at least 1s", c.RunningLeaseGrace)
	case c.DrainTimeout < 0:
		return fmt.Errorf("drain timeout %s is invalid: it must not be negative", c.DrainTimeout)
	case c.PluginConcurrency < 1 || c.PluginConcurrency > c.Concurrency:
		return fmt.Errorf("plugin concurrency %d is invalid: it must be between 1 and the concurrency %d", c.PluginConcurrency, c.Concurrency)
	case c.PluginIdleTimeout < time.Second:
		return fmt.Errorf("plugin idle timeout %s is too short: it must be at least 1s", c.PluginIdleTimeout)
	}
	return nil
}
