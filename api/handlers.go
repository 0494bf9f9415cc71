package api

import (
	"slices"
	"strings"

	"github.com/pulse-sched/pulse/worker"
)

// BuiltinPrefix starts the names of the handlers built into every worker.
// The prefix is reserved: no plugin may name its own handlers with it.
const BuiltinPrefix = "pulse."

// checkHandler applies the rules of which handler a plugin may schedule:
//
//   - a name that starts with "pulse." must be a built-in handler;
//   - a plugin whose registry entry lists handlers may schedule only those
//     (PERMISSION_DENIED otherwise);
//   - a plugin without an endpoint may schedule only the handlers that run
//     inside the workers: the built-ins and Config.LocalHandlers.
//     Anything else would have nothing to run it.
func (s *Service) checkHandler(plugin *Plugin, name string) *requestError {
	builtins := worker.BuiltinHandlerNames()
	if strings.HasPrefix(name, BuiltinPrefix) && !slices.Contains(builtins, name) {
		return newRequestError(CodeInvalidArgument,
			"handler_name %q is invalid: names starting with %q are reserved for the built-in handlers %s",
			name, BuiltinPrefix, strings.Join(builtins, ", "))
	}
	if !plugin.allows(name) {
		return newRequestError(CodePermissionDenied,
			"handler_name %q is not allowed for plugin %q: its registry entry allows only %s",
			name, plugin.ATSCode, strings.Join(plugin.Handlers, ", "))
	}
	if plugin.Endpoint == "" && !slices.Contains(builtins, name) && !slices.Contains(s.cfg.LocalHandlers, name) {
		return newRequestError(CodeInvalidArgument,
			"handler_name %q cannot run: plugin %q has no endpoint in the registry, so its schedules may use only the built-in handlers %s; give the plugin an endpoint to run its own handlers (in the plugins file, or with --dev-endpoint for the development plugin)",
			name, plugin.ATSCode, strings.Join(builtins, ", "))
	}
	return nil
}
