package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pulse-sched/pulse/proto/protocolpb"
)

func TestHandlerServerExecute(t *testing.T) {
	var got *Request
	srv := NewHandlerServer(map[string]HandlerFunc{
		"ok": func(_ context.Context, req *Request) error {
			got = req
			return nil
		},
		"fails":     func(context.Context, *Request) error { return errors.New("upstream answered 503") },
		"permanent": func(context.Context, *Request) error { return Permanent(errors.New("payload is not JSON")) },
		"silent":    func(context.Context, *Request) error { return errors.New("") },
		"panics":    func(context.Context, *Request) error { panic("boom") },
	})
	ctx := context.Background()
	req := func(handler string) *protocolpb.ExecuteRequest {
		return &protocolpb.ExecuteRequest{
			ExecutionId: "E", ScheduleId: "S", HandlerName: handler, Slot: "2026-01-02T15:04:05.123Z",
			Attempt: 2, Payload: []byte("p"), Metadata: map[string]string{"k": "v"}, AtsCode: "acme",
		}
	}

	resp, err := srv.Execute(ctx, req("ok"))
	require.NoError(t, err)
	require.True(t, resp.GetSuccess())
	require.Equal(t, &Request{
		ExecutionID: "E", ScheduleID: "S", HandlerName: "ok", ATSCode: "acme",
		Slot:    time.Date(2026, 1, 2, 15, 4, 5, 123e6, time.UTC),
		Attempt: 2, Payload: []byte("p"), Metadata: map[string]string{"k": "v"},
	}, got)

	cases := []struct {
		handler   string
		error     string
		permanent bool
	}{
		{"fails", "upstream answered 503", false},
		{"permanent", "payload is not JSON", true},
		{"silent", "handler failed without an error message", false},
		{"panics", `handler "panics" panicked: boom`, false},
		{"missing", `no handler named "missing" in this plugin; it serves fails, ok, panics, permanent, silent`, true},
	}
	for _, c := range cases {
		resp, err := srv.Execute(ctx, req(c.handler))
		require.NoError(t, err)
		require.False(t, resp.GetSuccess(), c.handler)
		require.Equal(t, c.error, resp.GetError(), c.handler)
		require.Equal(t, c.permanent, resp.GetPermanent(), c.handler)
	}

	bad := req("ok")
	bad.Slot = "yesterday"
	resp, err = srv.Execute(ctx, bad)
	require.NoError(t, err)
	require.True(t, resp.GetPermanent())
	require.Equal(t, `slot "yesterday" is not an RFC 3339 time`, resp.GetError())
}

func TestPermanent(t *testing.T) {
	require.NoError(t, Permanent(nil))
	base := errors.New("bad")
	err := Permanent(base)
	require.ErrorIs(t, err, ErrPermanent)
	require.ErrorIs(t, err, base)
	require.Equal(t, "bad", err.Error())
}

func TestServeHandlersStopsWithItsContext(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- ServeHandlers(ctx, lis, map[string]HandlerFunc{
			"echo": func(_ context.Context, req *Request) error {
				if string(req.Payload) != "ping" {
					return Permanent(errors.New("want ping"))
				}
				return nil
			},
		})
	}()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	callCtx, callCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer callCancel()
	resp, err := protocolpb.NewPluginHandlerClient(conn).Execute(callCtx, &protocolpb.ExecuteRequest{
		HandlerName: "echo", Slot: "2026-01-02T15:04:05Z", Payload: []byte("ping"),
	})
	require.NoError(t, err)
	require.True(t, resp.GetSuccess(), resp.GetError())

	cancel()
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("ServeHandlers did not return after its context ended")
	}
}
