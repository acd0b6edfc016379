package mercator.policy.pii_test

import rego.v1

import data.mercator.policy.pii

prompt(text) := {"version": 2, "phase": "request", "request": {
	"model": "gpt-4",
	"user": {"id": "demo-finance", "department": "finance", "groups": []},
	"messages": [
		{"role": "system", "text": "You are a helpful assistant.", "chars": 28},
		{"role": "user", "text": text, "chars": 1},
	],
}}

# The codes the policy denies with for one user message.
codes(text) := found if {
	found := {reason.code | some reason in pii.deny} with input as prompt(text)
}

test_ssn if {
	codes("My SSN is 123-45-6789, can you file this?") == {"pii_ssn"}
}

test_numbers_that_cannot_be_ssns if {
	codes("Ref 000-12-3456") == set()
	codes("Ref 666-12-3456") == set()
	codes("Ref 912-34-5678") == set()
	codes("Ref 123-00-4567") == set()
	codes("Ref 123-45-0000") == set()
}

test_card_numbers_passing_luhn if {
	codes("Charge 4111 1111 1111 1111 please") == {"pii_card"}
	codes("card: 5500-0000-0000-0004") == {"pii_card"}
	codes("amex 378282246310005 exp 12/27") == {"pii_card"}
}

test_card_like_numbers_failing_luhn_pass if {
	codes("Order 4111 1111 1111 1112 shipped") == set()
	codes("tracking 1234567890123") == set()
}

test_email if {
	codes("Send it to Jane.Doe+reports@Example.co.uk tomorrow") == {"pii_email"}
}

test_phone_numbers if {
	codes("Call me at (555) 234-5678.") == {"pii_phone"}
	codes("Call me at 555-234-5678") == {"pii_phone"}
	codes("Call me at +1 555 234 5678") == {"pii_phone"}
	codes("Our London office: +44 20 7946 0958") == {"pii_phone"}
}

test_several_kinds_give_several_reasons if {
	deny := pii.deny with input as prompt("SSN 123-45-6789, mail bob@example.com")
	deny == {
		{"code": "pii_ssn", "message": "The prompt appears to contain a US Social Security number"},
		{"code": "pii_email", "message": "The prompt appears to contain an email address"},
	}
}

test_pii_in_any_message_counts if {
	doc := {"request": {"messages": [
		{"role": "assistant", "text": "Sure."},
		{"role": "tool", "text": "customer: 123-45-6789"},
	]}}
	{r.code | some r in pii.deny} == {"pii_ssn"} with input as doc
}

test_a_number_split_across_messages_is_not_found if {
	doc := {"request": {"messages": [
		{"role": "user", "text": "Ref 123-45"},
		{"role": "user", "text": "-6789 and 4111 1111"},
		{"role": "user", "text": "1111 1111"},
	]}}
	pii.deny == set() with input as doc
}

test_a_check_can_be_turned_off if {
	deny := pii.deny with input as prompt("write to bob@example.com")
		with pii.checks as {"pii_ssn", "pii_card", "pii_phone"}
	deny == set()
}

test_benign_prompts_pass if {
	every text in [
		"Summarize the Q3 2024 results: revenue 1,234,567 USD, up 12.5%.",
		"The meeting is on 2026-12-03 at 10:30; room 4-101.",
		"Upgrade from version 1.2.3 to 2.0.0-rc.1 and rerun the tests.",
		"ISBN 978-3-16-148410-0 is the book I meant.",
		"Compute 2^64 = 18446744073709551616 in Python.",
		"Use the decorator @staticmethod in the class.",
		"My order number is 4000-1234 and it has not arrived.",
	] {
		codes(text) == set()
	}
}

test_the_module_does_not_allow if {
	not pii.allow with input as prompt("Hello")
}

test_odd_input_gives_no_error_and_no_reason if {
	every doc in [
		null,
		{},
		{"request": null},
		{"request": "x"},
		{"request": {"messages": null}},
		{"request": {"messages": "123-45-6789"}},
		{"request": {"messages": {"role": "user", "text": "123-45-6789"}}},
		{"request": {"messages": [null, 5, "123-45-6789", [], {"role": "user"}, {"text": null}, {"text": 123456789}, {"text": ["123-45-6789"]}]}},
	] {
		pii.deny == set() with input as doc
	}
}

test_luhn_valid_rejects_non_digits if {
	not pii.luhn_valid("4111x11111111111")
	not pii.luhn_valid(4111111111111111)
	not pii.luhn_valid("")
	pii.luhn_valid("4111111111111111")
}
