# Example (response phase): withhold answers that contain something like a secret.
#
# response_deny, with code response_secret, when the provider's answer text
# (input.response.text, or the text of any choice) contains:
#   - an OpenAI-style key: "sk-", optionally a few dash-separated prefixes (proj-, ant-...),
#     then 20 or more letters and digits;
#   - a PEM private key header: -----BEGIN ... PRIVATE KEY-----;
#   - an AWS access key id (AKIA or ASIA and 16 upper-case letters or digits);
#   - a GitHub token (ghp_, gho_, ghu_, ghs_, ghr_ and 36+ characters, or github_pat_);
#   - a Slack token (xoxb-, xoxp-...).
# The reason says which kind, never the value.
#
# Known false positives: placeholders and documentation examples such as
# "sk-xxxxxxxxxxxxxxxxxxxxxxxx" or AWS's "AKIAIOSFODNN7EXAMPLE", and answers that explain
# the PEM format by showing a header, are withheld too.
package mercator.policy.response_secrets

import rego.v1

# Each pattern runs only when the text contains one of its `keywords`, a cheap test that
# spares most answers any regex compilation (regorus compiles on every call).
secret_patterns := [
	{"kind": "an API key", "keywords": ["sk-"], "pattern": `(?-u:\b)sk-(?:[A-Za-z0-9]+-){0,3}[A-Za-z0-9]{20,}`},
	{"kind": "a private key", "keywords": ["PRIVATE KEY"], "pattern": `-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----`},
	{"kind": "an AWS access key", "keywords": ["AKIA", "ASIA"], "pattern": `(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)`},
	{
		"kind": "a GitHub token",
		"keywords": ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
		"pattern": `(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})`,
	},
	{"kind": "a Slack token", "keywords": ["xox"], "pattern": `(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}`},
]

response_deny contains {
	"code": "response_secret",
	"message": sprintf("The response was withheld: it appears to contain %s", [secret.kind]),
} if {
	some secret in secret_patterns
	some keyword in secret.keywords
	contains(text, keyword)
	regex.match(secret.pattern, text)
}

# The answer's joined text and each choice's text, when they are strings, joined by line
# breaks (no pattern spans one) so that each pattern runs once.
text := concat("\n", texts)

texts contains t if {
	t := input.response.text
	is_string(t)
}

texts contains t if {
	choices := input.response.choices
	is_array(choices)
	some choice in choices
	is_object(choice)
	t := object.get(choice, "text", null)
	is_string(t)
}
