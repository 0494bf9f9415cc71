package admin

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/pulse-sched/pulse/internal/redisconn"
)

// MonitoringPath is the URL path of the asynq web console.
const MonitoringPath = "/monitoring"

// Access is the permission of a token on the console.
type Access int

const (
	// AccessNone means the token is unknown: the request gets 401.
	AccessNone Access = iota
	// AccessDenied means the token is known but may not use the console,
	// such as a plugin's token: the request gets 403.
	AccessDenied
	// AccessGranted means the token may use the console.
	AccessGranted
)

// Authorizer returns the permission of a token. It is called for every
// request, so it reads the registry as reloaded at that moment.
type Authorizer func(token string) Access

// MonitoringOptions sets up the asynq web console.
type MonitoringOptions struct {
	// Redis is the process's client; the console shares it.
	Redis redis.UniversalClient
	// Authorize decides which tokens may use the console.
	Authorize Authorizer
	// Writable allows requests that change tasks and queues (delete, run,
	// archive, pause). Without it the console is read-only.
	Writable bool
	Logger   *slog.Logger
}

// NewMonitoring returns the asynq web console (asynqmon) rooted at
// MonitoringPath, behind token authentication. A request carries the token
// as "Authorization: Bearer <token>" or as the password of HTTP basic
// authentication, with any user name. Unless opts.Writable, only GET and
// HEAD requests reach the console.
func NewMonitoring(opts MonitoringOptions) http.Handler {
	console := asynqmon.New(asynqmon.Options{
		RootPath:     MonitoringPath,
		RedisConnOpt: redisconn.Shared{Client: opts.Redis},
		ReadOnly:     !opts.Writable,
	})
	var h http.Handler = console
	if !opts.Writable {
		h = readOnly(h)
	}
	return secureHeaders(authenticate(opts.Authorize, opts.Logger, h))
}

// tokenOf returns the token of a request: a bearer token, or the password
// of basic authentication.
func tokenOf(r *http.Request) (string, bool) {
	header := r.Header.Get("Authorization")
	if scheme, token, ok := strings.Cut(header, " "); ok && strings.EqualFold(scheme, "Bearer") {
		token = strings.TrimSpace(token)
		return token, token != ""
	}
	if _, password, ok := r.BasicAuth(); ok && password != "" {
		return password, true
	}
	return "", false
}

// authenticate lets a request through when authorize grants its token. A
// missing or unknown token gets 401 with a basic authentication challenge,
// so that a browser prompts for it; a known token without access gets 403.
// Neither the token nor the request's headers are logged.
func authenticate(authorize Authorizer, logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		access := AccessNone
		if token, ok := tokenOf(r); ok {
			access = authorize(token)
		}
		switch access {
		case AccessGranted:
			next.ServeHTTP(w, r)
		case AccessDenied:
			logger.Warn("monitoring request rejected: the token is not an admin token", "method", r.Method, "path", r.URL.Path, "remote_addr", r.RemoteAddr)
			http.Error(w, "forbidden: an admin token is required", http.StatusForbidden)
		default:
			w.Header().Set("WWW-Authenticate", `Basic realm="Pulse monitoring", charset="UTF-8"`)
			http.Error(w, "unauthorized: give an admin token as a bearer token or as the basic authentication password", http.StatusUnauthorized)
		}
	})
}

// readOnly rejects every method but GET and HEAD. asynqmon's own read-only
// mode guards only its API routes; this guards the whole console.
func readOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the monitoring console is read-only: start Pulse with --monitoring-writable to allow changes", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// contentSecurityPolicy keeps the console's page to this server: asynqmon's
// page links fonts from a public CDN, which the browser then does not load.
const contentSecurityPolicy = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}
