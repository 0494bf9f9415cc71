package api

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// Limits bounds what a request may contain. The zero value of each field
// means its default.
type Limits struct {
	// MinInterval is the shortest interval a schedule may have. Default 1s.
	MinInterval time.Duration
	// MaxPayloadBytes bounds the payload. Default 1 MiB.
	MaxPayloadBytes int
	// MaxMetadataEntries bounds the number of metadata pairs. Default 32.
	MaxMetadataEntries int
	// MaxMetadataKeyBytes bounds each metadata key. Default 64.
	MaxMetadataKeyBytes int
	// MaxMetadataValueBytes bounds each metadata value. Default 1024.
	MaxMetadataValueBytes int
}

// Defaults of Limits, and limits that do not change.
const (
	MinIntervalDefault           = time.Second
	MaxPayloadBytesDefault       = 1 << 20
	MaxMetadataEntriesDefault    = 32
	MaxMetadataKeyBytesDefault   = 64
	MaxMetadataValueBytesDefault = 1024

	// MaxIntervalSeconds is one year of 365 days.
	MaxIntervalSeconds = 365 * 24 * 60 * 60
	// MaxHandlerNameLength bounds handler names.
	MaxHandlerNameLength = 128
)

func (l Limits) withDefaults() Limits {
	if l.MinInterval == 0 {
		l.MinInterval = MinIntervalDefault
	}
	if l.MaxPayloadBytes == 0 {
		l.MaxPayloadBytes = MaxPayloadBytesDefault
	}
	if l.MaxMetadataEntries == 0 {
		l.MaxMetadataEntries = MaxMetadataEntriesDefault
	}
	if l.MaxMetadataKeyBytes == 0 {
		l.MaxMetadataKeyBytes = MaxMetadataKeyBytesDefault
	}
	if l.MaxMetadataValueBytes == 0 {
		l.MaxMetadataValueBytes = MaxMetadataValueBytesDefault
	}
	return l
}

func (l Limits) validate() error {
	switch {
	case l.MinInterval < time.Second || l.MinInterval%time.Second != 0:
		return fmt.Errorf("minimum interval %s is invalid: it must be a whole number of seconds, at least 1s", l.MinInterval)
	case l.MinInterval > MaxIntervalSeconds*time.Second:
		return fmt.Errorf("minimum interval %s is invalid: it must be at most one year", l.MinInterval)
	case l.MaxPayloadBytes < 0:
		return fmt.Errorf("max payload bytes %d is invalid: it must not be negative", l.MaxPayloadBytes)
	case l.MaxMetadataEntries < 0:
		return fmt.Errorf("max metadata entries %d is invalid: it must not be negative", l.MaxMetadataEntries)
	case l.MaxMetadataKeyBytes < 1:
		return fmt.Errorf("max metadata key bytes %d is invalid: it must be at least 1", l.MaxMetadataKeyBytes)
	case l.MaxMetadataValueBytes < 0:
		return fmt.Errorf("max metadata value bytes %d is invalid: it must not be negative", l.MaxMetadataValueBytes)
	}
	return nil
}

var (
	handlerNamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._:-]*$`)
	metadataKeyPattern = regexp.MustCompile(`^[A-Za-z0-9._/-]+$`)
)

func validateHandlerName(name string) *requestError {
	if name == "" {
		return newRequestError(CodeInvalidArgument, "handler_name is missing")
	}
	if len(name) > MaxHandlerNameLength || !handlerNamePattern.MatchString(name) {
		return newRequestError(CodeInvalidArgument,
			"handler_name %q is invalid: it must be 1 to %d letters, digits, '.', '_', ':' or '-', starting with a letter",
			truncate(name, 64), MaxHandlerNameLength)
	}
	return nil
}

func (l Limits) validateInterval(seconds int32) *requestError {
	minSeconds := int64(l.MinInterval / time.Second)
	if int64(seconds) < minSeconds {
		return newRequestError(CodeInvalidArgument,
			"interval_seconds %d is invalid: it must be at least %d", seconds, minSeconds)
	}
	if seconds > MaxIntervalSeconds {
		return newRequestError(CodeInvalidArgument,
			"interval_seconds %d is invalid: it must be at most %d (one year)", seconds, MaxIntervalSeconds)
	}
	return nil
}

func (l Limits) validatePayload(payload []byte) *requestError {
	if len(payload) > l.MaxPayloadBytes {
		return newRequestError(CodeInvalidArgument,
			"payload is %d bytes, above the limit of %d bytes", len(payload), l.MaxPayloadBytes)
	}
	return nil
}

// validateMetadata checks the metadata and returns it as a JSON object with
// sorted keys.
func (l Limits) validateMetadata(metadata map[string]string) (string, *requestError) {
	if len(metadata) > l.MaxMetadataEntries {
		return "", newRequestError(CodeInvalidArgument,
			"metadata has %d entries, above the limit of %d", len(metadata), l.MaxMetadataEntries)
	}

	// Check keys in sorted order so the same request always reports the same
	// first problem.
	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := metadata[k]
		switch {
		case k == "":
			return "", newRequestError(CodeInvalidArgument, "metadata key is empty")
		case len(k) > l.MaxMetadataKeyBytes:
			return "", newRequestError(CodeInvalidArgument,
				"metadata key %q is %d bytes, above the limit of %d", truncate(k, 64), len(k), l.MaxMetadataKeyBytes)
		case !metadataKeyPattern.MatchString(k):
			return "", newRequestError(CodeInvalidArgument,
				"metadata key %q is invalid: it may contain only letters, digits, '.', '_', '/' or '-'", truncate(k, 64))
		case len(v) > l.MaxMetadataValueBytes:
			return "", newRequestError(CodeInvalidArgument,
				"metadata value of key %q is %d bytes, above the limit of %d", k, len(v), l.MaxMetadataValueBytes)
		case !utf8.ValidString(v):
			return "", newRequestError(CodeInvalidArgument, "metadata value of key %q is not valid UTF-8", k)
		}
	}

	if len(metadata) == 0 {
		return "{}", nil
	}
	// encoding/json writes map keys in sorted order.
	b, err := json.Marshal(metadata)
	if err != nil {
		return "", newRequestError(CodeInvalidArgument, "metadata cannot be encoded as JSON: %v", err)
	}
	return string(b), nil
}

// normalizeScheduleID checks that id is a ULID, the form of every schedule
// ID, and returns it in the canonical upper case.
func normalizeScheduleID(id string) (string, *requestError) {
	if id == "" {
		return "", newRequestError(CodeInvalidArgument, "schedule_id is missing")
	}
	if _, err := ulid.ParseStrict(id); err != nil {
		return "", newRequestError(CodeInvalidArgument,
			"schedule_id %q is invalid: it must be a 26-character ULID such as 01JDQ5V9M3K2X8Y7Z6W5T4R3Q2", truncate(id, 64))
	}
	return strings.ToUpper(id), nil
}

// truncate shortens s for an error message, so a huge bad value cannot make a
// huge message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
