package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// ServiceName is the full name of ScheduleService, as the health service
// reports it.
const ServiceName = "protocol.ScheduleService"

// NewGRPCServer returns a gRPC server that serves svc, the gRPC health
// service and server reflection. Calls are logged without their messages,
// so tokens and payloads never reach the log; a panic in a call becomes an
// INTERNAL status instead of a crash. Interceptors given in opts, such as
// metrics.GRPCServerOptions, run outside these two, so they see the status
// that the client gets.
func NewGRPCServer(svc *Service, healthServer *health.Server, logger *slog.Logger, opts ...grpc.ServerOption) *grpc.Server {
	callLogger := logger.With("component", "grpc")
	logCall := logging.LoggerFunc(func(ctx context.Context, level logging.Level, msg string, fields ...any) {
		callLogger.Log(ctx, slog.Level(level), msg, fields...)
	})
	onPanic := recovery.WithRecoveryHandler(func(p any) error {
		callLogger.Error("panic in gRPC call", "panic", p)
		return status.Error(codes.Internal, "internal error")
	})

	opts = append(opts,
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(logCall,
				logging.WithLogOnEvents(logging.FinishCall),
				logging.WithLevels(callLevel),
				logging.WithDurationField(func(d time.Duration) logging.Fields {
					return logging.Fields{"duration_ms", d.Milliseconds()}
				})),
			recovery.UnaryServerInterceptor(onPanic),
		),
	)
	srv := grpc.NewServer(opts...)
	protocolpb.RegisterScheduleServiceServer(srv, svc)
	healthpb.RegisterHealthServer(srv, healthServer)
	reflection.Register(srv)
	return srv
}

// callLevel logs successful calls at debug level, so a busy API does not
// flood the log, and infrastructure failures at warn level.
func callLevel(code codes.Code) logging.Level {
	switch code {
	case codes.OK, codes.Canceled:
		return logging.LevelDebug
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return logging.LevelError
	default:
		return logging.LevelWarn
	}
}
