# Example: contractors may only call during office hours.
#
# A user in one of `restricted_groups` ("contractors") is denied, with code
# outside_office_hours, unless the request time (input.time, RFC 3339) falls on one of
# `office_days` (Monday to Friday) between `office_opens_hour`:00 included and
# `office_closes_hour`:00 excluded, in UTC. Everyone else is untouched. This module only
# denies; another module must allow the request.
#
# It fails closed: a restricted user whose request time is missing or unreadable is
# denied too. input.time is checked before it is parsed (shape, calendar date, years
# 1900-2199), so a malformed time never makes the evaluation fail.
package mercator.policy.office_hours

import rego.v1

office_opens_hour := 8

office_closes_hour := 18

office_days := {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}

restricted_groups := {"contractors"}

deny contains {
	"code": "outside_office_hours",
	"message": sprintf(
		"Contractors may only use the gateway Monday to Friday, %02d:00 to %02d:00 UTC",
		[office_opens_hour, office_closes_hour],
	),
} if {
	restricted
	not within_office_hours
}

restricted if {
	groups := input.request.user.groups
	is_array(groups)
	some group in groups
	group in restricted_groups
}

within_office_hours if {
	ns := request_time_ns
	time.weekday(ns) in office_days
	[hour, _, _] := time.clock(ns)
	hour >= office_opens_hour
	hour < office_closes_hour
}

# The request time in nanoseconds since the epoch; undefined unless input.time is a
# well-formed RFC 3339 time that time.parse_rfc3339_ns accepts.
request_time_ns := time.parse_rfc3339_ns(input.time) if {
	is_string(input.time)
	regex.match(_rfc3339, input.time)
	_real_date(input.time)
}

_rfc3339 := concat("", [
	`^(?:19|20|21)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])`,
	`T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?`,
	`(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$`,
])

# The day exists in its month (the text already matched _rfc3339: two-digit strings
# compare like numbers).
_real_date(t) if substring(t, 8, 2) <= "28"

_real_date(t) if {
	substring(t, 5, 2) != "02"
	substring(t, 8, 2) <= "30"
}

_real_date(t) if substring(t, 5, 2) in {"01", "03", "05", "07", "08", "10", "12"}

_real_date(t) if {
	substring(t, 5, 5) == "02-29"
	_leap_year(to_number(substring(t, 0, 4)))
}

_leap_year(y) if {
	y % 4 == 0
	y % 100 != 0
}

_leap_year(y) if y % 400 == 0
