// Package endpoint parses the handler endpoint of a plugin: the registry's
// "endpoint", stored on each schedule as source_url, that workers call.
//
// Three forms are accepted:
//
//	host:port           plain gRPC, no TLS
//	grpc://host:port    plain gRPC, no TLS (the same as host:port)
//	grpcs://host:port   gRPC over TLS; the certificate must be valid for host
//
// Plain gRPC sends payloads and metadata unencrypted, so it is meant for
// loopback and private networks only. The host may be a name, an IPv4
// address or an IPv6 address in brackets ([::1]:7600).
package endpoint

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Endpoint is a parsed plugin endpoint.
type Endpoint struct {
	// Address is host:port, the gRPC dial target.
	Address string
	// Host is the host part, the server name that TLS verifies.
	Host string
	// TLS is true for grpcs://.
	TLS bool
}

// The URL schemes of an endpoint.
const (
	SchemePlain = "grpc://"
	SchemeTLS   = "grpcs://"
)

// Parse checks s and returns its parts. The error names the value and the
// rule it breaks.
func Parse(s string) (Endpoint, error) {
	var e Endpoint
	rest := s
	switch {
	case strings.HasPrefix(s, SchemeTLS):
		rest, e.TLS = s[len(SchemeTLS):], true
	case strings.HasPrefix(s, SchemePlain):
		rest = s[len(SchemePlain):]
	case strings.Contains(s, "://"):
		return e, fmt.Errorf("endpoint %q is invalid: its scheme must be grpc:// (plain) or grpcs:// (TLS), or none for plain host:port", s)
	}

	host, port, err := net.SplitHostPort(rest)
	if err != nil || host == "" || strings.ContainsAny(rest, "/?#@ ") {
		return e, fmt.Errorf("endpoint %q is invalid: it must be host:port, grpc://host:port or grpcs://host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return e, fmt.Errorf("endpoint %q is invalid: port %q must be a number from 1 to 65535", s, port)
	}
	e.Host = host
	e.Address = net.JoinHostPort(host, port)
	return e, nil
}

// String returns the endpoint in its canonical form.
func (e Endpoint) String() string {
	if e.TLS {
		return SchemeTLS + e.Address
	}
	return SchemePlain + e.Address
}
