package mercator.policy.department_test

import rego.v1

import data.mercator.policy.department

request(department, model) := {"request": {"user": {"department": department}, "model": model}}

not_authorized := {"code": "department_not_authorized", "message": "Department not authorized for this model"}

test_finance_may_use_gpt_4 if {
	department.allow with input as request("finance", "gpt-4")
	count(department.deny) == 0 with input as request("finance", "gpt-4")
}

test_finance_may_not_use_gpt_3_5 if {
	not department.allow with input as request("finance", "gpt-3.5-turbo")
	department.deny == {not_authorized} with input as request("finance", "gpt-3.5-turbo")
}

test_engineering_may_use_gpt_3_5_and_claude_3_sonnet if {
	department.allow with input as request("engineering", "gpt-3.5-turbo")
	department.allow with input as request("engineering", "claude-3-sonnet")
}

test_engineering_may_not_use_gpt_4 if {
	not department.allow with input as request("engineering", "gpt-4")
}

test_unknown_department_is_denied if {
	not department.allow with input as request("marketing", "gpt-4")
}

test_missing_user_is_denied if {
	not department.allow with input as {"request": {"model": "gpt-4"}}
	department.deny == {not_authorized} with input as {"request": {"model": "gpt-4"}}
}

test_odd_input_is_denied_without_error if {
	every doc in [{}, {"request": null}, {"request": "x"}, {"request": {"user": "x", "model": 5}}, {"request": {"user": {"department": 5}, "model": "gpt-4"}}] {
		not department.allow with input as doc
		department.deny == {not_authorized} with input as doc
	}
}
