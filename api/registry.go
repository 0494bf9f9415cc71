package api

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"

	"go.yaml.in/yaml/v3"

	"github.com/pulse-sched/pulse/internal/endpoint"
)

// Plugin is one plugin of the registry.
type Plugin struct {
	// ATSCode identifies the plugin and owns its schedules.
	ATSCode string
	// Endpoint is the plugin's handler endpoint, stored on each of its
	// schedules as source_url. Empty when the plugin serves no handlers.
	Endpoint string
	// Handlers lists the handler names that the plugin may schedule; empty
	// means any.
	Handlers []string
}

// allows reports whether the plugin may schedule the handler name.
func (p *Plugin) allows(name string) bool {
	return len(p.Handlers) == 0 || slices.Contains(p.Handlers, name)
}

// Principal is the caller that a token identifies.
type Principal struct {
	// Plugin is set for a plugin token.
	Plugin *Plugin
	// AdminName is set for an admin token, which may act on every plugin's
	// schedules.
	AdminName string
}

// IsAdmin reports whether the principal holds an admin token.
func (p Principal) IsAdmin() bool { return p.AdminName != "" }

// registryFile is the YAML layout of the plugins file.
type registryFile struct {
	Plugins []struct {
		ATSCode     string   `yaml:"ats_code"`
		TokenSHA256 string   `yaml:"token_sha256"`
		Endpoint    string   `yaml:"endpoint"`
		Handlers    []string `yaml:"handlers"`
	} `yaml:"plugins"`
	Admins []struct {
		Name        string `yaml:"name"`
		TokenSHA256 string `yaml:"token_sha256"`
	} `yaml:"admins"`
}

type tokenEntry struct {
	digest    [sha256.Size]byte
	principal Principal
}

// registrySnapshot is one parsed version of the plugins file. It is never
// changed after it is built.
type registrySnapshot struct {
	tokens  []tokenEntry
	plugins map[string]*Plugin
}

// Registry maps tokens to plugins and admins. It stores only the SHA-256 of
// each token. Load may be called again at any time to replace the contents;
// readers see either the old or the new contents, never a mix.
type Registry struct {
	current atomic.Pointer[registrySnapshot]
}

var (
	atsCodePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	digestPattern  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// NewRegistry returns an empty registry, which authenticates no token.
func NewRegistry() *Registry {
	r := &Registry{}
	r.current.Store(&registrySnapshot{plugins: map[string]*Plugin{}})
	return r
}

// LoadFile replaces the registry's contents with the plugins file at path.
// On any error the previous contents stay in place.
func (r *Registry) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read plugins file: %w", err)
	}
	if err := r.Load(data); err != nil {
		return fmt.Errorf("plugins file %s: %w", path, err)
	}
	return nil
}

// Load replaces the registry's contents with a plugins file's YAML. On any
// error the previous contents stay in place.
func (r *Registry) Load(data []byte) error {
	snap, err := parseRegistry(data)
	if err != nil {
		return err
	}
	r.current.Store(snap)
	return nil
}

func parseRegistry(data []byte) (*registrySnapshot, error) {
	var f registryFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("invalid YAML: %s", explainYAMLError(err))
	}

	snap := &registrySnapshot{plugins: map[string]*Plugin{}}
	seen := map[string]string{}
	addToken := func(hexDigest, owner string, principal Principal) error {
		hexDigest = strings.ToLower(hexDigest)
		if !digestPattern.MatchString(hexDigest) {
			return fmt.Errorf("%s: token_sha256 must be 64 hex characters (the SHA-256 of the token), got %d characters", owner, len(hexDigest))
		}
		if other, ok := seen[hexDigest]; ok {
			return fmt.Errorf("%s: token_sha256 is already used by %s", owner, other)
		}
		seen[hexDigest] = owner
		var entry tokenEntry
		hex.Decode(entry.digest[:], []byte(hexDigest))
		entry.principal = principal
		snap.tokens = append(snap.tokens, entry)
		return nil
	}

	for i, p := range f.Plugins {
		owner := fmt.Sprintf("plugins[%d]", i)
		if !atsCodePattern.MatchString(p.ATSCode) {
			return nil, fmt.Errorf("%s: ats_code %q is invalid: it must be 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter or digit", owner, p.ATSCode)
		}
		if _, ok := snap.plugins[p.ATSCode]; ok {
			return nil, fmt.Errorf("%s: ats_code %q is listed twice", owner, p.ATSCode)
		}
		if p.Endpoint != "" {
			if _, err := endpoint.Parse(p.Endpoint); err != nil {
				return nil, fmt.Errorf("plugin %q: %w", p.ATSCode, err)
			}
		}
		for _, name := range p.Handlers {
			if reqErr := validateHandlerName(name); reqErr != nil {
				return nil, fmt.Errorf("plugin %q: handlers: %s", p.ATSCode, reqErr.message)
			}
		}
		plugin := &Plugin{ATSCode: p.ATSCode, Endpoint: p.Endpoint, Handlers: slices.Clone(p.Handlers)}
		snap.plugins[p.ATSCode] = plugin
		if err := addToken(p.TokenSHA256, fmt.Sprintf("plugin %q", p.ATSCode), Principal{Plugin: plugin}); err != nil {
			return nil, err
		}
	}
	for i, a := range f.Admins {
		if a.Name == "" {
			return nil, fmt.Errorf("admins[%d]: name is missing", i)
		}
		if err := addToken(a.TokenSHA256, fmt.Sprintf("admin %q", a.Name), Principal{AdminName: a.Name}); err != nil {
			return nil, err
		}
	}
	return snap, nil
}

// Authenticate returns the principal of token. It compares the token's
// SHA-256 with every entry in constant time, so the time it takes does not
// depend on which entry, if any, matches.
func (r *Registry) Authenticate(token string) (Principal, bool) {
	digest := sha256.Sum256([]byte(token))
	var found Principal
	matched := 0
	for _, e := range r.current.Load().tokens {
		if subtle.ConstantTimeCompare(digest[:], e.digest[:]) == 1 {
			found = e.principal
			matched = 1
		}
	}
	return found, matched == 1
}

// Plugin returns the plugin with the given ats_code.
func (r *Registry) Plugin(atsCode string) (*Plugin, bool) {
	p, ok := r.current.Load().plugins[atsCode]
	return p, ok
}

// Size returns the number of plugins and admins in the registry.
func (r *Registry) Size() (plugins, admins int) {
	snap := r.current.Load()
	return len(snap.plugins), len(snap.tokens) - len(snap.plugins)
}

// TokenDigest returns the hex SHA-256 of a token, the form the plugins file
// stores.
func TokenDigest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// unknownFieldPattern matches the yaml package's message for a key that the
// target struct lacks, which names a Go type that means nothing to a user.
var unknownFieldPattern = regexp.MustCompile(`line (\d+): field (\S+) not found in type .*`)

// explainYAMLError rewrites the yaml package's unknown-field messages into
// the keys the plugins file allows.
func explainYAMLError(err error) string {
	return unknownFieldPattern.ReplaceAllString(err.Error(),
		"line $1: unknown key \"$2\"; the keys are plugins and admins at the top, ats_code, token_sha256, endpoint and handlers in a plugin, name and token_sha256 in an admin")
}
