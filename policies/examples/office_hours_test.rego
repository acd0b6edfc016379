package mercator.policy.office_hours_test

import rego.v1

import data.mercator.policy.office_hours

at(groups, t) := {"version": 2, "phase": "request", "time": t, "request": {
	"model": "gpt-4",
	"user": {"id": "c1", "department": "engineering", "groups": groups},
}}

outside := {
	"code": "outside_office_hours",
	"message": "Contractors may only use the gateway Monday to Friday, 08:00 to 18:00 UTC",
}

# 2026-12-03 is a Thursday, 2026-12-05 a Saturday, 2026-12-07 a Monday.

test_contractor_within_office_hours_passes if {
	office_hours.deny == set() with input as at(["contractors"], "2026-12-03T10:30:00.250Z")
	office_hours.deny == set() with input as at(["contractors"], "2026-12-03T08:00:00Z")
	office_hours.deny == set() with input as at(["contractors"], "2026-12-03T17:59:59.999Z")
	office_hours.deny == set() with input as at(["contractors"], "2026-12-07T09:00:00Z")
}

test_contractor_before_and_after_hours_is_denied if {
	office_hours.deny == {outside} with input as at(["contractors"], "2026-12-03T07:59:59Z")
	office_hours.deny == {outside} with input as at(["contractors"], "2026-12-03T18:00:00Z")
	office_hours.deny == {outside} with input as at(["analysts", "contractors"], "2026-12-03T23:15:00Z")
}

test_contractor_on_the_weekend_is_denied if {
	office_hours.deny == {outside} with input as at(["contractors"], "2026-12-05T10:00:00Z")
	office_hours.deny == {outside} with input as at(["contractors"], "2026-12-06T10:00:00Z")
}

test_the_window_is_in_utc if {
	# 10:00 in New York is 15:00 UTC: open. 19:00 in Paris is 18:00 UTC: closed.
	office_hours.deny == set() with input as at(["contractors"], "2026-12-03T10:00:00-05:00")
	office_hours.deny == {outside} with input as at(["contractors"], "2026-12-03T19:00:00+01:00")
	# Friday 23:30 in Los Angeles is Saturday 07:30 UTC.
	office_hours.deny == {outside} with input as at(["contractors"], "2026-12-04T23:30:00-08:00")
}

test_other_users_are_never_denied if {
	office_hours.deny == set() with input as at(["analysts"], "2026-12-05T03:00:00Z")
	office_hours.deny == set() with input as at([], "2026-12-05T03:00:00Z")
	office_hours.deny == set() with input as at(["analysts"], "not a time")
}

test_the_window_can_be_overridden if {
	office_hours.deny == set() with input as at(["contractors"], "2026-12-03T06:30:00Z")
		with office_hours.office_opens_hour as 6
	office_hours.deny == {{
		"code": "outside_office_hours",
		"message": "Contractors may only use the gateway Monday to Friday, 06:00 to 16:00 UTC",
	}} with input as at(["contractors"], "2026-12-03T16:30:00Z")
		with office_hours.office_opens_hour as 6
		with office_hours.office_closes_hour as 16
}

test_the_module_does_not_allow if {
	not office_hours.allow with input as at(["contractors"], "2026-12-03T10:30:00Z")
}

test_contractor_with_unusable_time_is_denied_without_error if {
	every t in [
		null,
		1764757800,
		"",
		"garbage",
		"2026-12-03",
		"2026-12-03 10:30:00Z",
		"2026-13-03T10:30:00Z",
		"2026-02-30T10:30:00Z",
		"2026-04-31T10:30:00Z",
		"2026-02-29T10:30:00Z",
		"2100-02-29T10:30:00Z",
		"2026-12-03T24:00:00Z",
		"2026-12-03T10:60:00Z",
		"2026-12-03T10:30:60Z",
		"2026-12-03T10:30:00",
		"2026-12-03T10:30:00+25:00",
		"9999-12-03T10:30:00Z",
		"1600-12-03T10:30:00Z",
		"2026-12-03T10:30:00.1234567890Z",
	] {
		office_hours.deny == {outside} with input as at(["contractors"], t)
	}
}

test_valid_leap_days_are_read if {
	# 2028-02-29 is a Tuesday; 2000-02-29 a Tuesday too.
	office_hours.deny == set() with input as at(["contractors"], "2028-02-29T12:00:00Z")
	office_hours.deny == set() with input as at(["contractors"], "2000-02-29T12:00:00Z")
	office_hours.deny == set() with input as at(["contractors"], "2026-12-31T12:00:00Z")
}

test_odd_input_gives_no_error if {
	every doc in [
		null,
		{},
		{"request": "x"},
		{"request": {"user": {"groups": "contractors"}}, "time": "2026-12-05T10:00:00Z"},
		{"request": {"user": {"groups": [null, 5, ["contractors"]]}}, "time": "2026-12-05T10:00:00Z"},
	] {
		office_hours.deny == set() with input as doc
	}
	office_hours.deny == {outside} with input as {"request": {"user": {"groups": ["contractors"]}}}
}
