package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// fakeAPI responds to every call according to its token: a token "ok"
// succeeds, "down" fails with UNAVAILABLE, and any other token is rejected
// in-band with that token as the error code.
type fakeAPI struct {
	protocolpb.UnimplementedScheduleServiceServer
	created chan *protocolpb.CreateScheduleRequest
}

func (f *fakeAPI) answer(token string) (bool, string, string, error) {
	switch token {
	case "ok":
		return true, "", "", nil
	case "down":
		return false, "", "", status.Error(codes.Unavailable, "schedule store unavailable")
	default:
		return false, token, "rejected because the token says so", nil
	}
}

func (f *fakeAPI) CreateSchedule(_ context.Context, req *protocolpb.CreateScheduleRequest) (*protocolpb.CreateScheduleResponse, error) {
	f.created <- req
	ok, code, msg, err := f.answer(req.GetAuthToken())
	if err != nil {
		return nil, err
	}
	resp := &protocolpb.CreateScheduleResponse{Success: ok, ErrorCode: code, Error: msg}
	if ok {
		resp.ScheduleId = "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2"
	}
	return resp, nil
}

func (f *fakeAPI) GetSchedule(_ context.Context, req *protocolpb.GetScheduleRequest) (*protocolpb.GetScheduleResponse, error) {
	ok, code, msg, err := f.answer(req.GetAuthToken())
	if err != nil {
		return nil, err
	}
	resp := &protocolpb.GetScheduleResponse{Success: ok, ErrorCode: code, Error: msg}
	if ok {
		resp.Job = &protocolpb.ScheduledJob{Id: req.GetScheduleId(), State: "active"}
	}
	return resp, nil
}

func (f *fakeAPI) PauseSchedule(_ context.Context, req *protocolpb.PauseScheduleRequest) (*protocolpb.PauseScheduleResponse, error) {
	ok, code, msg, err := f.answer(req.GetAuthToken())
	return &protocolpb.PauseScheduleResponse{Success: ok, ErrorCode: code, Error: msg}, err
}

func (f *fakeAPI) ResumeSchedule(_ context.Context, req *protocolpb.ResumeScheduleRequest) (*protocolpb.ResumeScheduleResponse, error) {
	ok, code, msg, err := f.answer(req.GetAuthToken())
	return &protocolpb.ResumeScheduleResponse{Success: ok, ErrorCode: code, Error: msg}, err
}

func (f *fakeAPI) DeleteSchedule(_ context.Context, req *protocolpb.DeleteScheduleRequest) (*protocolpb.DeleteScheduleResponse, error) {
	ok, code, msg, err := f.answer(req.GetAuthToken())
	return &protocolpb.DeleteScheduleResponse{Success: ok, ErrorCode: code, Error: msg}, err
}

// startFakeAPI serves a fakeAPI on loopback and returns its address.
func startFakeAPI(t *testing.T) (string, *fakeAPI) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	api := &fakeAPI{created: make(chan *protocolpb.CreateScheduleRequest, 10)}
	srv := grpc.NewServer()
	protocolpb.RegisterScheduleServiceServer(srv, api)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), api
}

func newClient(t *testing.T, addr, token string) *Client {
	t.Helper()
	c, err := New(addr, token)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientSendsTheSpec(t *testing.T) {
	addr, api := startFakeAPI(t)
	c := newClient(t, "grpc://"+addr, "ok")
	retries := 0
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))

	id, err := c.Create(context.Background(), ScheduleSpec{
		Handler: "sync.accounts", Interval: 90 * time.Second, Payload: []byte("p"),
		Metadata: map[string]string{"k": "v"}, ATSCode: "acme", StartAt: start,
		Timeout: 5 * time.Second, MaxRetries: &retries, PauseAfterFailures: 3,
		MisfirePolicy: "run_all", MisfireWindow: time.Minute, OverlapPolicy: "allow",
	})
	require.NoError(t, err)
	require.Equal(t, "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", id)

	req := <-api.created
	require.Equal(t, "ok", req.GetAuthToken())
	require.Equal(t, "sync.accounts", req.GetHandlerName())
	require.EqualValues(t, 90, req.GetIntervalSeconds())
	require.EqualValues(t, 5, req.GetTimeoutSeconds())
	require.NotNil(t, req.MaxRetries)
	require.EqualValues(t, 0, req.GetMaxRetries())
	require.EqualValues(t, 3, req.GetPauseAfterFailures())
	require.EqualValues(t, 60, req.GetMisfireWindowSeconds())
	require.Equal(t, "run_all", req.GetMisfirePolicy())
	require.Equal(t, "allow", req.GetOverlapPolicy())
	require.Equal(t, "2030-01-02T02:04:05Z", req.GetStartAt())
	require.Equal(t, map[string]string{"k": "v"}, req.GetMetadata())

	// Without MaxRetries the field stays absent, so the API's default holds.
	_, err = c.Create(context.Background(), ScheduleSpec{Handler: "h", Interval: time.Second})
	require.NoError(t, err)
	require.Nil(t, (<-api.created).MaxRetries)
}

func TestClientRejectsFractionalSeconds(t *testing.T) {
	addr, api := startFakeAPI(t)
	c := newClient(t, addr, "ok")
	_, err := c.Create(context.Background(), ScheduleSpec{Handler: "h", Interval: 1500 * time.Millisecond})
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorContains(t, err, "Interval 1.5s is invalid")
	require.Empty(t, api.created, "a request was sent")
}

func TestClientTurnsRejectionsIntoErrors(t *testing.T) {
	addr, _ := startFakeAPI(t)
	ctx := context.Background()
	calls := map[string]func(c *Client) error{
		"create": func(c *Client) error {
			_, err := c.Create(ctx, ScheduleSpec{Handler: "h", Interval: time.Second})
			return err
		},
		"get":    func(c *Client) error { _, err := c.Get(ctx, "id"); return err },
		"pause":  func(c *Client) error { return c.Pause(ctx, "id") },
		"resume": func(c *Client) error { return c.Resume(ctx, "id") },
		"delete": func(c *Client) error { return c.Delete(ctx, "id") },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, call(newClient(t, addr, "ok")))

			err := call(newClient(t, addr, "NOT_FOUND"))
			require.ErrorIs(t, err, ErrNotFound)
			require.NotErrorIs(t, err, ErrInvalidArgument)
			var rejected *Error
			require.True(t, errors.As(err, &rejected))
			require.Equal(t, CodeNotFound, rejected.Code)
			require.Equal(t, "rejected because the token says so", rejected.Message)
			require.Equal(t, "NOT_FOUND: rejected because the token says so", err.Error())

			require.ErrorIs(t, call(newClient(t, addr, "PERMISSION_DENIED")), ErrPermissionDenied)

			err = call(newClient(t, addr, "down"))
			require.False(t, errors.As(err, &rejected), "an unreachable store is not a rejection")
			require.Equal(t, codes.Unavailable, status.Code(err))
		})
	}
}

func TestClientGetReturnsTheJob(t *testing.T) {
	addr, _ := startFakeAPI(t)
	job, err := newClient(t, addr, "ok").Get(context.Background(), "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2")
	require.NoError(t, err)
	require.Equal(t, "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", job.GetId())
	require.Equal(t, "active", job.GetState())
}

func TestNewChecksItsArguments(t *testing.T) {
	_, err := New("127.0.0.1:7400", "")
	require.ErrorContains(t, err, "token is empty")
	_, err = New("http://127.0.0.1:7400", "t")
	require.ErrorContains(t, err, `endpoint "http://127.0.0.1:7400" is invalid`)
	_, err = New("127.0.0.1:7400", "t", WithCallTimeout(0))
	require.ErrorContains(t, err, "call timeout 0s is invalid")
}

func TestErrorIs(t *testing.T) {
	err := &Error{Code: CodeAlreadyExists, Message: "retry"}
	require.ErrorIs(t, err, ErrAlreadyExists)
	require.NotErrorIs(t, err, ErrNotFound)
	require.NotErrorIs(t, err, &Error{Code: CodeAlreadyExists, Message: "other"})
	require.Equal(t, "ALREADY_EXISTS", ErrAlreadyExists.Error())
	require.Equal(t, "UNKNOWN: x", check(&protocolpb.PauseScheduleResponse{Error: "x"}, nil).Error())
}
