package mercator.policy.response_secrets_test

import rego.v1

import data.mercator.policy.response_secrets

answer(text) := {"version": 2, "phase": "response", "request": {"model": "gpt-4"}, "response": {
	"status": 200,
	"model": "gpt-4-0613",
	"text": text,
	"choices": [{"index": 0, "finish_reason": "stop", "text": text}],
	"finish_reasons": ["stop"],
	"usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
}}

withheld(kind) := {{
	"code": "response_secret",
	"message": sprintf("The response was withheld: it appears to contain %s", [kind]),
}}

test_openai_style_keys if {
	response_secrets.response_deny == withheld("an API key") with input as answer("Use OPENAI_API_KEY=sk-AbCdEfGhIjKlMnOpQrStUvWx1234 in .env")
	response_secrets.response_deny == withheld("an API key") with input as answer("key: sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12")
}

test_pem_private_keys if {
	response_secrets.response_deny == withheld("a private key") with input as answer("-----BEGIN RSA PRIVATE KEY-----\nMIIEow...")
	response_secrets.response_deny == withheld("a private key") with input as answer("-----BEGIN PRIVATE KEY-----")
	response_secrets.response_deny == withheld("a private key") with input as answer("-----BEGIN OPENSSH PRIVATE KEY-----")
}

test_other_tokens if {
	response_secrets.response_deny == withheld("an AWS access key") with input as answer("aws_access_key_id = AKIA2E0A8F3B244C9986")
	response_secrets.response_deny == withheld("a GitHub token") with input as answer("token ghp_0123456789abcdefghijABCDEFGHIJklmnopqr")
	response_secrets.response_deny == withheld("a Slack token") with input as answer("xoxb-123456789012-abcdefGHIJ")
}

test_several_kinds_give_several_reasons if {
	deny := response_secrets.response_deny with input as answer("sk-AbCdEfGhIjKlMnOpQrStUvWx1234\n-----BEGIN EC PRIVATE KEY-----")
	count(deny) == 2
}

test_a_secret_in_one_choice_only if {
	doc := {"response": {"choices": [{"index": 0, "text": "fine"}, {"index": 1, "text": "sk-AbCdEfGhIjKlMnOpQrStUvWx1234"}]}}
	response_secrets.response_deny == withheld("an API key") with input as doc
}

test_ordinary_answers_pass if {
	every text in [
		"The capital of France is Paris.",
		"Install it with pip install scikit-learn (import it as sklearn).",
		"Set the key with export OPENAI_API_KEY=<your key>; never commit it.",
		"A PEM public key starts with -----BEGIN PUBLIC KEY-----.",
		"The task-list has sk-1 and sk-2 items.",
		"ghp_ tokens are GitHub personal access tokens.",
	] {
		response_secrets.response_deny == set() with input as answer(text)
	}
}

test_documented_false_positives_are_withheld if {
	response_secrets.response_deny == withheld("an API key") with input as answer("Example: sk-xxxxxxxxxxxxxxxxxxxxxxxx")
	response_secrets.response_deny == withheld("an AWS access key") with input as answer("e.g. AKIAIOSFODNN7EXAMPLE")
	response_secrets.response_deny == withheld("a private key") with input as answer("A key file begins with -----BEGIN PRIVATE KEY-----")
}

test_no_request_phase_rules if {
	not response_secrets.allow with input as answer("sk-AbCdEfGhIjKlMnOpQrStUvWx1234")
	not response_secrets.deny with input as answer("sk-AbCdEfGhIjKlMnOpQrStUvWx1234")
}

test_odd_input_gives_no_error if {
	every doc in [
		null,
		{},
		{"response": null},
		{"response": "sk-AbCdEfGhIjKlMnOpQrStUvWx1234"},
		{"response": {"text": null, "choices": null}},
		{"response": {"text": 42, "choices": "sk-AbCdEfGhIjKlMnOpQrStUvWx1234"}},
		{"response": {"text": ["sk-AbCdEfGhIjKlMnOpQrStUvWx1234"], "choices": [null, 1, {"text": 5}, {"index": 0}]}},
	] {
		response_secrets.response_deny == set() with input as doc
	}
}
