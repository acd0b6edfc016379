package mercator.policy.department_test

import rego.v1

import data.mercator.policy.department

request(department, model) := {"request": {"user": {"department": department}, "model": model}}

test_finance_may_use_gpt_4 if {
	department.allow with input as request("finance", "gpt-4")
	count(department.deny) == 0 with input as request("finance", "gpt-4")
}

test_finance_may_not_use_gpt_3_5 if {
	not department.allow with input as request("finance", "gpt-3.5-turbo")
	department.deny == {"Department not authorized for this model"} with input as request("finance", "gpt-3.5-turbo")
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
	department.deny == {"Department not authorized for this model"} with input as {"request": {"model": "gpt-4"}}
}
