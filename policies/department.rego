# Which department may use which model.
#
# Finance may use gpt-4; engineering may use gpt-3.5-turbo and claude-3-sonnet. Everyone
# and everything else is denied with one reason, code department_not_authorized. The
# user's department comes from the attributes of the API key that authenticated the
# request.
package mercator.policy.department

import rego.v1

models_by_department := {
	"finance": {"gpt-4"},
	"engineering": {"gpt-3.5-turbo", "claude-3-sonnet"},
}

default allow := false

allow if {
	input.request.model in models_by_department[input.request.user.department]
}

deny contains {
	"code": "department_not_authorized",
	"message": "Department not authorized for this model",
} if not allow
