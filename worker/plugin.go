package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/pulse-sched/pulse/internal/endpoint"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// PluginCallErrorPrefix starts the error of every attempt whose call to the
// plugin failed (unreachable, timed out, not a PluginHandler server). It
// distinguishes such a last_error from the plugin's own error texts, which
// are recorded unchanged.
const PluginCallErrorPrefix = "plugin call failed: "

// errPluginsClosed is the error of a call after the worker stopped.
var errPluginsClosed = errors.New("the worker has stopped its plugin connections")

// pluginConfig sets up the plugin calls of a worker.
type pluginConfig struct {
	// concurrency bounds the executions of one endpoint that run at once.
	concurrency int
	// idleTimeout closes a connection that no execution used for that long.
	idleTimeout time.Duration
	// rootCAs verifies grpcs:// endpoints; nil means the system's roots.
	rootCAs *x509.CertPool
}

// plugins calls the PluginHandler of plugin endpoints. It keeps one gRPC
// connection per endpoint, closed after idleTimeout without use or by
// close, and bounds the executions of each endpoint that run at once.
type plugins struct {
	cfg pluginConfig

	mu     sync.Mutex
	conns  map[string]*pluginConn // by source URL as stored
	closed bool
}

// pluginConn is the connection to one endpoint and its use.
type pluginConn struct {
	endpoint endpoint.Endpoint
	conn     *grpc.ClientConn
	client   protocolpb.PluginHandlerClient

	// The fields below are guarded by plugins.mu.
	// admitted counts the executions of this endpoint that run; it is
	// bounded by pluginConfig.concurrency.
	admitted int
	// calls counts the calls in flight.
	calls int
	// idle closes the connection once admitted and calls are zero for the
	// idle timeout; use counts the uses, so a stale timer does nothing.
	idle *time.Timer
	use  uint64
}

func newPlugins(cfg pluginConfig) *plugins {
	return &plugins{cfg: cfg, conns: map[string]*pluginConn{}}
}

// get returns the connection of sourceURL, dialing it when there is none.
// The caller holds p.mu.
func (p *plugins) get(sourceURL string) (*pluginConn, error) {
	if p.closed {
		return nil, errPluginsClosed
	}
	if pc, ok := p.conns[sourceURL]; ok {
		return pc, nil
	}
	ep, err := endpoint.Parse(sourceURL)
	if err != nil {
		return nil, Permanent(fmt.Errorf("source_url: %w", err))
	}
	creds := insecure.NewCredentials()
	if ep.TLS {
		creds = credentials.NewTLS(&tls.Config{ServerName: ep.Host, RootCAs: p.cfg.rootCAs, MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(ep.Address,
		grpc.WithTransportCredentials(creds),
		// Reconnect within seconds once a plugin that was down is back,
		// instead of gRPC's default of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, Permanent(fmt.Errorf("source_url %q cannot be dialed: %w", sourceURL, err))
	}
	pc := &pluginConn{endpoint: ep, conn: conn, client: protocolpb.NewPluginHandlerClient(conn)}
	p.conns[sourceURL] = pc
	return pc, nil
}

// admit takes one of the endpoint's execution places and returns the
// function that gives it back. It reports false, taking nothing, when the
// endpoint already runs its limit of executions. An endpoint that cannot be
// parsed is admitted: its execution then fails with the parse error.
func (p *plugins) admit(sourceURL string) (release func(), ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc, err := p.get(sourceURL)
	if err != nil {
		return func() {}, true
	}
	if pc.admitted >= p.cfg.concurrency {
		return nil, false
	}
	pc.admitted++
	p.touch(pc)
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			pc.admitted--
			p.touch(pc)
		})
	}, true
}

// touch records a use of pc and arms its idle timer when nothing uses it.
// The caller holds p.mu.
func (p *plugins) touch(pc *pluginConn) {
	pc.use++
	if pc.idle != nil {
		pc.idle.Stop()
		pc.idle = nil
	}
	if pc.admitted > 0 || pc.calls > 0 || p.closed {
		return
	}
	use := pc.use
	pc.idle = time.AfterFunc(p.cfg.idleTimeout, func() { p.closeIdle(pc, use) })
}

// closeIdle closes pc if nothing used it since the use numbered use.
func (p *plugins) closeIdle(pc *pluginConn, use uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc.use != use || pc.admitted > 0 || pc.calls > 0 {
		return
	}
	for url, c := range p.conns {
		if c == pc {
			delete(p.conns, url)
		}
	}
	_ = pc.conn.Close()
}

// open counts the connections that are open, for tests.
func (p *plugins) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// close closes every connection; later calls fail.
func (p *plugins) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for url, pc := range p.conns {
		if pc.idle != nil {
			pc.idle.Stop()
		}
		_ = pc.conn.Close()
		delete(p.conns, url)
	}
}

// execute runs e by calling Execute on its source URL with ctx's deadline,
// the attempt's timeout. It is the HandlerFunc of every handler that the
// worker does not have.
func (p *plugins) execute(ctx context.Context, e *Execution) error {
	p.mu.Lock()
	pc, err := p.get(e.SourceURL)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	pc.calls++
	p.touch(pc)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		pc.calls--
		p.touch(pc)
		p.mu.Unlock()
	}()

	resp, err := pc.client.Execute(ctx, &protocolpb.ExecuteRequest{
		ExecutionId: e.ID,
		ScheduleId:  e.ScheduleID,
		HandlerName: e.HandlerName,
		Slot:        e.Slot.UTC().Format(slotFormat),
		Attempt:     int32(e.Attempt),
		Payload:     e.Payload,
		Metadata:    e.Metadata,
		AtsCode:     e.ATSCode,
	})
	if err != nil {
		return callError(ctx, pc.endpoint, err)
	}
	if resp.GetSuccess() {
		return nil
	}
	msg := resp.GetError()
	if msg == "" {
		msg = "the plugin reported a failure without an error message"
	}
	if resp.GetPermanent() {
		return Permanent(errors.New(msg))
	}
	return errors.New(msg)
}

// slotFormat is RFC 3339 in UTC with milliseconds, the API's time format.
const slotFormat = "2006-01-02T15:04:05.000Z07:00"

// callError describes a failed call to a plugin. UNIMPLEMENTED is permanent:
// the endpoint serves gRPC but not PluginHandler.
// The deadline may end the call on the plugin's side first, which then
// returns DEADLINE_EXCEEDED before the worker's context ends.
func callError(ctx context.Context, ep endpoint.Endpoint, err error) error {
	s := status.Convert(err)
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("%s%s: call canceled: %w", PluginCallErrorPrefix, ep, ctx.Err())
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || s.Code() == codes.DeadlineExceeded:
		return fmt.Errorf("%s%s timed out: no response within the attempt's timeout: %w", PluginCallErrorPrefix, ep, context.DeadlineExceeded)
	case s.Code() == codes.Unimplemented:
		return Permanent(fmt.Errorf("%s%s does not serve protocol.PluginHandler: %s", PluginCallErrorPrefix, ep, s.Message()))
	}
	return fmt.Errorf("%s%s: %s: %s", PluginCallErrorPrefix, ep, s.Code(), s.Message())
}
