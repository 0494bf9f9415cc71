package endpoint

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	valid := map[string]Endpoint{
		"127.0.0.1:7600":             {Address: "127.0.0.1:7600", Host: "127.0.0.1"},
		"grpc://billing.internal:80": {Address: "billing.internal:80", Host: "billing.internal"},
		"grpcs://plugins.example:443": {
			Address: "plugins.example:443", Host: "plugins.example", TLS: true,
		},
		"[::1]:7600":        {Address: "[::1]:7600", Host: "::1"},
		"grpcs://[::1]:443": {Address: "[::1]:443", Host: "::1", TLS: true},
	}
	for in, want := range valid {
		got, err := Parse(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}

	invalid := map[string]string{
		"":                             "must be host:port",
		"localhost":                    "must be host:port",
		":7600":                        "must be host:port",
		"http://127.0.0.1:7600":        "scheme must be grpc://",
		"tls://127.0.0.1:7600":         "scheme must be grpc://",
		"grpc://127.0.0.1:7600/path":   "must be host:port",
		"grpc://user@127.0.0.1:7600":   "must be host:port",
		"127.0.0.1:http":               `port "http" must be a number`,
		"127.0.0.1:0":                  `port "0" must be a number from 1 to 65535`,
		"127.0.0.1:70000":              `port "70000"`,
		"grpcs://plugins.example:443 ": "must be host:port",
	}
	for in, want := range invalid {
		_, err := Parse(in)
		require.Error(t, err, in)
		require.Contains(t, err.Error(), want, in)
		require.Contains(t, err.Error(), "endpoint", in)
	}
}

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:7600":    "grpc://127.0.0.1:7600",
		"grpc://h:1":        "grpc://h:1",
		"grpcs://[::1]:443": "grpcs://[::1]:443",
	} {
		e, err := Parse(in)
		require.NoError(t, err)
		require.Equal(t, want, e.String())
	}
}
