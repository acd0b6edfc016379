package mercator.policy.max_tokens_by_group_test

import rego.v1

import data.mercator.policy.max_tokens_by_group as caps

request(groups, max_tokens) := {"version": 2, "phase": "request", "request": {
	"model": "gpt-4",
	"user": {"id": "u1", "department": "finance", "groups": groups},
	"parameters": {"max_tokens": max_tokens, "stream": false, "tools": []},
}}

test_interns_are_capped_at_256 if {
	caps.obligations == {"max_tokens": 256} with input as request(["interns"], null)
}

test_contractors_are_capped_at_1024 if {
	caps.obligations == {"max_tokens": 1024} with input as request(["analysts", "contractors"], 4000)
}

test_the_smallest_cap_wins if {
	caps.obligations == {"max_tokens": 256} with input as request(["contractors", "interns"], null)
}

test_the_cap_does_not_depend_on_the_asked_max_tokens if {
	caps.obligations == {"max_tokens": 256} with input as request(["interns"], 100)
}

test_other_groups_get_no_obligation if {
	not caps.obligations with input as request(["analysts"], 4000)
	not caps.obligations with input as request([], null)
}

test_caps_can_be_configured if {
	caps.obligations == {"max_tokens": 64} with input as request(["trial"], null)
		with caps.caps_by_group as {"trial": 64}
}

test_the_module_neither_allows_nor_denies if {
	not caps.allow with input as request(["interns"], null)
	not caps.deny with input as request(["interns"], null)
}

test_odd_input_gives_no_obligation_and_no_error if {
	every doc in [
		null,
		{},
		{"request": "x"},
		{"request": {"user": null}},
		{"request": {"user": "interns"}},
		{"request": {"user": {"groups": "interns"}}},
		{"request": {"user": {"groups": {"interns": true}}}},
		{"request": {"user": {"groups": [null, 5, ["interns"], {"interns": 1}]}}},
	] {
		not caps.obligations with input as doc
	}
}
