// Package client is a Go client for Pulse plugins. It has two halves:
//
//   - Client calls Pulse's ScheduleService to create, read, pause, resume
//     and delete the plugin's schedules, and turns in-band rejections into
//     *Error values;
//   - HandlerServer (and ServeHandlers) serves the PluginHandler API from a
//     map of handler functions, so that Pulse workers can run them.
//
// A plugin usually does both:
//
//	c, err := client.New("127.0.0.1:7400", os.Getenv("PULSE_TOKEN"))
//	...
//	id, err := c.Create(ctx, client.ScheduleSpec{Handler: "sync.accounts", Interval: time.Minute})
//	...
//	err = client.ServeHandlers(ctx, lis, map[string]client.HandlerFunc{
//		"sync.accounts": syncAccounts,
//	})
package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pulse-sched/pulse/internal/endpoint"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// Job is a schedule as GetSchedule returns it.
type Job = protocolpb.ScheduledJob

// DefaultCallTimeout bounds a call whose context has no deadline.
const DefaultCallTimeout = 10 * time.Second

// Client calls the ScheduleService of one Pulse API with one token. It is
// safe for concurrent use. Close it when done.
type Client struct {
	conn    *grpc.ClientConn
	svc     protocolpb.ScheduleServiceClient
	token   string
	timeout time.Duration
}

type options struct {
	tlsConfig   *tls.Config
	dialOptions []grpc.DialOption
	timeout     time.Duration
}

// Option changes how New connects.
type Option func(*options)

// WithTLSConfig connects over TLS with cfg, whatever the address's scheme.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(o *options) { o.tlsConfig = cfg }
}

// WithDialOptions adds gRPC dial options, such as interceptors. Transport
// credentials given here win over the ones that the address implies.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithCallTimeout bounds each call whose context has no deadline. Default
// DefaultCallTimeout.
func WithCallTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// New returns a client of the Pulse API at addr that authenticates every
// call with token. addr is host:port or grpc://host:port for plain gRPC, or
// grpcs://host:port for TLS verified with the system's roots. New does not
// connect: the first call does.
func New(addr, token string, opts ...Option) (*Client, error) {
	o := options{timeout: DefaultCallTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if token == "" {
		return nil, fmt.Errorf("client: token is empty: give the plugin's token")
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("client: call timeout %s is invalid: it must be positive", o.timeout)
	}
	ep, err := endpoint.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("client: Pulse API address: %w", err)
	}

	creds := insecure.NewCredentials()
	switch {
	case o.tlsConfig != nil:
		creds = credentials.NewTLS(o.tlsConfig)
	case ep.TLS:
		creds = credentials.NewTLS(&tls.Config{ServerName: ep.Host, MinVersion: tls.VersionTLS12})
	}
	dialOptions := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, o.dialOptions...)
	conn, err := grpc.NewClient(ep.Address, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Client{conn: conn, svc: protocolpb.NewScheduleServiceClient(conn), token: token, timeout: o.timeout}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// callContext bounds ctx with the client's timeout unless it has a deadline.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// ScheduleSpec describes a schedule to create. Zero fields take Pulse's
// defaults.
type ScheduleSpec struct {
	// Handler is the handler to run at every slot: a built-in such as
	// pulse.log, or one that the plugin serves.
	Handler string
	// Interval is the time between slots, a whole number of seconds.
	Interval time.Duration
	// Payload and Metadata are passed to the handler at every slot.
	Payload  []byte
	Metadata map[string]string
	// ATSCode names the owning plugin; required with an admin token only.
	ATSCode string
	// RunImmediately makes the first slot the creation time.
	RunImmediately bool
	// StartAt anchors the grid at a future time; zero means now.
	StartAt time.Time
	// Timeout is the deadline of one attempt, whole seconds; zero means the
	// API's default (30s unless configured).
	Timeout time.Duration
	// MaxRetries is the number of retries after a failed attempt; nil means
	// the API's default (3 unless configured).
	MaxRetries *int
	// PauseAfterFailures pauses the schedule after that many consecutive
	// failed executions; zero means never.
	PauseAfterFailures int
	// MisfirePolicy is run_latest (default), skip or run_all.
	MisfirePolicy string
	// MisfireWindow bounds run_all, whole seconds; zero means one hour.
	MisfireWindow time.Duration
	// OverlapPolicy is skip (default), allow or buffer_one.
	OverlapPolicy string
}

// Create creates a schedule and returns its ID.
func (c *Client) Create(ctx context.Context, spec ScheduleSpec) (string, error) {
	req, err := c.createRequest(spec)
	if err != nil {
		return "", err
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.svc.CreateSchedule(ctx, req)
	if err := check(resp, err); err != nil {
		return "", err
	}
	return resp.GetScheduleId(), nil
}

func (c *Client) createRequest(spec ScheduleSpec) (*protocolpb.CreateScheduleRequest, error) {
	req := &protocolpb.CreateScheduleRequest{
		AuthToken:          c.token,
		HandlerName:        spec.Handler,
		Payload:            spec.Payload,
		Metadata:           spec.Metadata,
		AtsCode:            spec.ATSCode,
		RunImmediately:     spec.RunImmediately,
		PauseAfterFailures: int32(spec.PauseAfterFailures),
		MisfirePolicy:      spec.MisfirePolicy,
		OverlapPolicy:      spec.OverlapPolicy,
	}
	var err error
	if req.IntervalSeconds, err = seconds("Interval", spec.Interval); err != nil {
		return nil, err
	}
	if req.TimeoutSeconds, err = seconds("Timeout", spec.Timeout); err != nil {
		return nil, err
	}
	if req.MisfireWindowSeconds, err = seconds("MisfireWindow", spec.MisfireWindow); err != nil {
		return nil, err
	}
	if spec.MaxRetries != nil {
		n := int32(*spec.MaxRetries)
		req.MaxRetries = &n
	}
	if !spec.StartAt.IsZero() {
		req.StartAt = spec.StartAt.UTC().Format(time.RFC3339Nano)
	}
	return req, nil
}

// seconds converts a whole number of seconds for the API.
func seconds(field string, d time.Duration) (int32, error) {
	if d%time.Second != 0 || d < 0 || d/time.Second > 1<<31-1 {
		return 0, &Error{Code: CodeInvalidArgument,
			Message: fmt.Sprintf("%s %s is invalid: it must be a whole, non-negative number of seconds", field, d)}
	}
	return int32(d / time.Second), nil
}

// Get returns a schedule, including a deleted one until its retention ends.
func (c *Client) Get(ctx context.Context, id string) (*Job, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	resp, err := c.svc.GetSchedule(ctx, &protocolpb.GetScheduleRequest{AuthToken: c.token, ScheduleId: id})
	if err := check(resp, err); err != nil {
		return nil, err
	}
	return resp.GetJob(), nil
}

// Pause pauses a schedule; pausing a paused schedule succeeds.
func (c *Client) Pause(ctx context.Context, id string) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	return check(c.svc.PauseSchedule(ctx, &protocolpb.PauseScheduleRequest{AuthToken: c.token, ScheduleId: id}))
}

// Resume resumes a paused schedule at the next slot of its grid; resuming an
// active schedule succeeds.
func (c *Client) Resume(ctx context.Context, id string) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	return check(c.svc.ResumeSchedule(ctx, &protocolpb.ResumeScheduleRequest{AuthToken: c.token, ScheduleId: id}))
}

// Delete soft-deletes a schedule; deleting a deleted schedule succeeds.
func (c *Client) Delete(ctx context.Context, id string) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	return check(c.svc.DeleteSchedule(ctx, &protocolpb.DeleteScheduleRequest{AuthToken: c.token, ScheduleId: id}))
}
