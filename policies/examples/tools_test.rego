package mercator.policy.tools_test

import rego.v1

import data.mercator.policy.tools

request(user, tool_names) := {"version": 2, "phase": "request", "request": {
	"model": "gpt-4",
	"user": user,
	"parameters": {"max_tokens": null, "stream": false, "tools": tool_names},
}}

not_allowed := {"code": "tools_not_allowed", "message": "This API key may not offer tools to the model"}

test_restricted_group_may_not_send_tools if {
	tools.deny == {not_allowed} with input as request({"id": "r1", "groups": ["restricted"]}, ["get_weather"])
	tools.deny == {not_allowed} with input as request({"id": "r1", "groups": ["analysts", "restricted"]}, ["a", "b"])
}

test_tools_allowed_false_may_not_send_tools if {
	tools.deny == {not_allowed} with input as request({"id": "u1", "groups": [], "tools_allowed": "false"}, ["get_weather"])
	tools.deny == {not_allowed} with input as request({"id": "u1", "groups": [], "tools_allowed": " FALSE "}, ["get_weather"])
	tools.deny == {not_allowed} with input as request({"id": "u1", "groups": [], "tools_allowed": "no"}, ["get_weather"])
}

test_restricted_users_without_tools_pass if {
	tools.deny == set() with input as request({"id": "r1", "groups": ["restricted"]}, [])
	tools.deny == set() with input as request({"id": "r1", "groups": ["restricted"], "tools_allowed": "false"}, null)
	tools.deny == set() with input as {"request": {"user": {"groups": ["restricted"]}}}
	tools.deny == set() with input as {"request": {"user": {"groups": ["restricted"]}, "parameters": null}}
}

test_other_users_may_send_tools if {
	tools.deny == set() with input as request({"id": "u1", "groups": ["analysts"]}, ["get_weather"])
	tools.deny == set() with input as request({"id": "u1", "groups": [], "tools_allowed": "true"}, ["get_weather"])
	tools.deny == set() with input as request({"id": "u1"}, ["get_weather"])
}

test_the_module_does_not_allow if {
	not tools.allow with input as request({"id": "u1", "groups": []}, [])
}

test_odd_input_gives_no_error if {
	every doc in [
		null,
		{},
		{"request": "x"},
		{"request": {"user": "restricted", "parameters": {"tools": ["t"]}}},
		{"request": {"user": {"groups": "restricted"}, "parameters": {"tools": ["t"]}}},
		{"request": {"user": {"groups": [5, null, ["restricted"]]}, "parameters": {"tools": ["t"]}}},
		{"request": {"user": {"tools_allowed": false}, "parameters": {"tools": ["t"]}}},
		{"request": {"user": {"tools_allowed": 0}, "parameters": {"tools": ["t"]}}},
		{"request": {"user": {"groups": ["restricted"]}, "parameters": "tools"}},
		{"request": {"user": {"groups": ["restricted"]}, "parameters": {"tools": "get_weather"}}},
		{"request": {"user": {"groups": ["restricted"]}, "parameters": {"tools": 3}}},
	] {
		tools.deny == set() with input as doc
	}
	tools.deny == {not_allowed} with input as {"request": {"user": {"groups": ["restricted"]}, "parameters": {"tools": {"get_weather": {}}}}}
}
