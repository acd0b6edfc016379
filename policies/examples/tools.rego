# Example: some callers may not offer tools (function calling) to the model.
#
# Denies, with code tools_not_allowed, a request that offers at least one tool
# (input.request.parameters.tools) when the user is in one of `restricted_groups`
# ("restricted") or the key's attribute tools_allowed is "false" (also "no" or "0", any
# case, surrounding spaces ignored). Requests without tools pass. This module only
# denies; another module must allow the request.
package mercator.policy.tools

import rego.v1

restricted_groups := {"restricted"}

deny contains {
	"code": "tools_not_allowed",
	"message": "This API key may not offer tools to the model",
} if {
	tools_forbidden
	tools_offered
}

tools_forbidden if {
	groups := input.request.user.groups
	is_array(groups)
	some group in groups
	group in restricted_groups
}

tools_forbidden if {
	value := input.request.user.tools_allowed
	is_string(value)
	lower(trim_space(value)) in {"false", "no", "0"}
}

# The gateway gives a list of tool names; any other non-empty collection counts too.
tools_offered if {
	tools := input.request.parameters.tools
	is_array(tools)
	count(tools) > 0
}

tools_offered if {
	tools := input.request.parameters.tools
	is_object(tools)
	count(tools) > 0
}

tools_offered if {
	tools := input.request.parameters.tools
	is_set(tools)
	count(tools) > 0
}
