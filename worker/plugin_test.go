package worker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/pulse-sched/pulse/client"
	"github.com/pulse-sched/pulse/proto/protocolpb"
)

// servePlugin serves handlers on a loopback port until the test ends and
// returns the address.
func servePlugin(t *testing.T, handlers map[string]client.HandlerFunc, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = client.ServeHandlers(ctx, lis, handlers, opts...)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String()
}

// acceptOnly listens and accepts connections; with hold it keeps them open
// without a byte written, else it closes each at once.
func acceptOnly(t *testing.T, hold bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			if hold {
				conns = append(conns, c)
			} else {
				c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func newTestPlugins(t *testing.T, cfg pluginConfig) *plugins {
	t.Helper()
	if cfg.concurrency == 0 {
		cfg.concurrency = 2
	}
	if cfg.idleTimeout == 0 {
		cfg.idleTimeout = time.Minute
	}
	p := newPlugins(cfg)
	t.Cleanup(p.close)
	return p
}

func testExecution(sourceURL, handler string) *Execution {
	return &Execution{
		ID: "01JDQ5VE000000000000000000", ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", ATSCode: "acme",
		HandlerName: handler, SourceURL: sourceURL, Slot: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC),
		Attempt: 1, Payload: []byte("payload"), Metadata: map[string]string{"team": "core"},
	}
}

func callPlugin(t *testing.T, p *plugins, e *Execution, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.execute(ctx, e)
}

func TestPluginCallOutcomes(t *testing.T) {
	var got *client.Request
	addr := servePlugin(t, map[string]client.HandlerFunc{
		"ok": func(_ context.Context, req *client.Request) error {
			got = req
			return nil
		},
		"fails": func(context.Context, *client.Request) error { return errors.New("upstream answered 503") },
		"permanent": func(context.Context, *client.Request) error {
			return client.Permanent(errors.New("payload is not JSON"))
		},
		"hangs": func(ctx context.Context, _ *client.Request) error {
			<-ctx.Done()
			return ctx.Err()
		},
	})
	p := newTestPlugins(t, pluginConfig{})

	require.NoError(t, callPlugin(t, p, testExecution(addr, "ok"), 5*time.Second))
	require.Equal(t, &client.Request{
		ExecutionID: "01JDQ5VE000000000000000000", ScheduleID: "01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", HandlerName: "ok",
		ATSCode: "acme", Slot: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), Attempt: 1,
		Payload: []byte("payload"), Metadata: map[string]string{"team": "core"},
	}, got)

	err := callPlugin(t, p, testExecution("grpc://"+addr, "fails"), 5*time.Second)
	require.EqualError(t, err, "upstream answered 503")
	require.NotErrorIs(t, err, ErrPermanent)

	err = callPlugin(t, p, testExecution(addr, "permanent"), 5*time.Second)
	require.EqualError(t, err, "payload is not JSON")
	require.ErrorIs(t, err, ErrPermanent)

	err = callPlugin(t, p, testExecution(addr, "hangs"), 300*time.Millisecond)
	require.ErrorContains(t, err, PluginCallErrorPrefix+"grpc://"+addr+" timed out: no response within the attempt's timeout")
	require.NotErrorIs(t, err, ErrPermanent)

	require.Equal(t, 2, p.open(), "one connection per source URL")
}

func TestPluginCallFailures(t *testing.T) {
	unimplemented := func() string {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := grpc.NewServer()
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
		return lis.Addr().String()
	}()
	http1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("not gRPC"))
	}))
	t.Cleanup(http1.Close)

	cases := []struct {
		name, addr, want string
		permanent        bool
	}{
		{"down", closedAddr(t), "Unavailable", false},
		{"closes every connection", acceptOnly(t, false), "Unavailable", false},
		{"speaks HTTP/1", http1.Listener.Addr().String(), "Unavailable", false},
		{"never answers", acceptOnly(t, true), "timed out: no response within the attempt's timeout", false},
		{"serves another gRPC API", unimplemented, "does not serve protocol.PluginHandler", true},
	}
	p := newTestPlugins(t, pluginConfig{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			err := callPlugin(t, p, testExecution(c.addr, "sync"), time.Second)
			require.Error(t, err)
			t.Log(err)
			require.Contains(t, err.Error(), PluginCallErrorPrefix+"grpc://"+c.addr)
			require.Contains(t, err.Error(), c.want)
			require.Equal(t, c.permanent, errors.Is(err, ErrPermanent), err.Error())
			require.Less(t, time.Since(start), 3*time.Second, "the call outlived its deadline")
		})
	}
}

func TestPluginCallBadSourceURL(t *testing.T) {
	p := newTestPlugins(t, pluginConfig{})
	err := callPlugin(t, p, testExecution("http://127.0.0.1:1", "sync"), time.Second)
	require.ErrorIs(t, err, ErrPermanent)
	require.ErrorContains(t, err, `source_url: endpoint "http://127.0.0.1:1" is invalid`)

	release, ok := p.admit("http://127.0.0.1:1")
	require.True(t, ok, "a bad source URL is admitted, to fail with its parse error")
	release()
}

func TestPluginAdmitBoundsEachEndpoint(t *testing.T) {
	p := newTestPlugins(t, pluginConfig{concurrency: 2})
	a, b := closedAddr(t), closedAddr(t)

	r1, ok := p.admit(a)
	require.True(t, ok)
	r2, ok := p.admit(a)
	require.True(t, ok)
	_, ok = p.admit(a)
	require.False(t, ok, "a third execution of a full endpoint was admitted")

	rb, ok := p.admit(b)
	require.True(t, ok, "another endpoint must not wait for a full one")
	rb()

	r1()
	r1() // a second release gives nothing back
	r3, ok := p.admit(a)
	require.True(t, ok)
	_, ok = p.admit(a)
	require.False(t, ok)
	r2()
	r3()
}

func TestPluginConnectionsCloseWhenIdleAndOnClose(t *testing.T) {
	addr := servePlugin(t, map[string]client.HandlerFunc{
		"ok": func(context.Context, *client.Request) error { return nil },
	})
	p := newTestPlugins(t, pluginConfig{idleTimeout: 200 * time.Millisecond})

	release, ok := p.admit(addr)
	require.True(t, ok)
	require.NoError(t, callPlugin(t, p, testExecution(addr, "ok"), 5*time.Second))
	require.Equal(t, 1, p.open())
	// An admitted execution keeps its connection, however long it runs.
	require.Never(t, func() bool { return p.open() == 0 }, 500*time.Millisecond, 50*time.Millisecond)

	release()
	require.Eventually(t, func() bool { return p.open() == 0 }, 5*time.Second, 20*time.Millisecond)

	// A new call dials again; close ends it and every later call.
	release, ok = p.admit(addr)
	require.True(t, ok)
	defer release()
	require.NoError(t, callPlugin(t, p, testExecution(addr, "ok"), 5*time.Second))
	require.Equal(t, 1, p.open())
	p.close()
	require.Equal(t, 0, p.open())
	require.ErrorIs(t, callPlugin(t, p, testExecution(addr, "ok"), time.Second), errPluginsClosed)
}

func TestPluginCallOverTLS(t *testing.T) {
	cert, roots := selfSignedCert(t, "127.0.0.1")
	addr := servePlugin(t, map[string]client.HandlerFunc{
		"ok": func(context.Context, *client.Request) error { return nil },
	}, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))

	trusting := newTestPlugins(t, pluginConfig{rootCAs: roots})
	require.NoError(t, callPlugin(t, trusting, testExecution("grpcs://"+addr, "ok"), 5*time.Second))

	// The system's roots do not know the test's certificate, and a plain
	// call to a TLS server fails too.
	system := newTestPlugins(t, pluginConfig{})
	err := callPlugin(t, system, testExecution("grpcs://"+addr, "ok"), 5*time.Second)
	require.ErrorContains(t, err, PluginCallErrorPrefix+"grpcs://"+addr)
	require.ErrorContains(t, err, "certificate")
	err = callPlugin(t, system, testExecution(addr, "ok"), 5*time.Second)
	require.ErrorContains(t, err, PluginCallErrorPrefix+"grpc://"+addr)
}

// selfSignedCert returns a certificate for host and a pool that trusts it.
func selfSignedCert(t *testing.T, host string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP(host)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	parsed, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(parsed)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// The generated code must keep the service's full name, which plugins
// register and workers call.
func TestPluginHandlerServiceName(t *testing.T) {
	require.Equal(t, "protocol.PluginHandler", protocolpb.PluginHandler_ServiceDesc.ServiceName)
}
