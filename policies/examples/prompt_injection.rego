# Example: block requests whose user or tool messages show strong signs of prompt
# injection.
#
# Uses data.mercator.lib.prompt_injection (see its header for the signals and their known
# false positives). Denies with code prompt_injection when the library has at least one
# strong finding in a message of role user, tool or function; the reason names the
# signal codes, never the text. Weak findings (encoded data, zero-width or bidi
# characters, plain persona requests) do not deny.
#
# Override: a user in one of `exempt_groups` ("security-research"), or whose key has the
# attribute prompt_injection_exempt = "true", is not checked, e.g. a red team or a
# security trainer who needs to quote attacks. This module only denies; another module
# must allow the request.
package mercator.policy.prompt_injection

import rego.v1

import data.mercator.lib.prompt_injection as injection

exempt_groups := {"security-research"}

exempt_attribute := "prompt_injection_exempt"

deny contains {
	"code": "prompt_injection",
	"message": sprintf("The request looks like a prompt injection attempt (%s)", [concat(", ", injection.codes(strong_findings))]),
} if {
	not exempt
	count(strong_findings) > 0
}

strong_findings := injection.strong(injection.message_findings)

exempt if {
	groups := input.request.user.groups
	is_array(groups)
	some group in groups
	group in exempt_groups
}

exempt if {
	value := input.request.user[exempt_attribute]
	is_string(value)
	lower(trim_space(value)) == "true"
}
