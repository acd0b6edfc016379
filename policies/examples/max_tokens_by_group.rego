# Example: cap the length of answers by the caller's groups.
#
# A user in one of the groups of `caps_by_group` gets the obligation
# {"max_tokens": <cap>}; a user in several gets the smallest cap. The gateway applies
# obligations only to requests that are allowed overall, and lowers the request's
# max_tokens to the cap (a smaller max_tokens asked by the caller stays). Users in none of
# these groups get no obligation. This module neither allows nor denies.
package mercator.policy.max_tokens_by_group

import rego.v1

caps_by_group := {
	"interns": 256,
	"contractors": 1024,
}

# The caps of the user's groups; `groups` missing or not a list of strings gives none.
caps := [cap |
	groups := input.request.user.groups
	is_array(groups)
	some group in groups
	is_string(group)
	cap := caps_by_group[group]
]

obligations := {"max_tokens": min(caps)} if count(caps) > 0
