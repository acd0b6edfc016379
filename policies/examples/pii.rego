# Example: keep personal data out of prompts.
#
# Denies a request whose messages (any role) contain something that looks like:
#   pii_ssn    a US Social Security number, written 123-45-6789 (numbers that cannot be
#              SSNs are skipped: area 000, 666 or 9xx, group 00, serial 0000)
#   pii_card   a payment card number: 13 to 19 digits, optionally grouped with spaces or
#              dashes, passing the Luhn check
#   pii_email  an email address
#   pii_phone  a phone number: North American (555) 234-5678, 555-234-5678, +1 555 234 5678,
#              or an international number starting with + and 10 to 15 digits
#
# The reasons never repeat the matched text. To turn a check off, remove its code from
# `checks`. This module only denies; another module (e.g. the department policy) must
# allow the request.
#
# Known gaps: SSNs without dashes, cards with other separators, local phone numbers
# without an area code, and obfuscated addresses ("jane at example dot com") are not
# detected. A 13-19 digit identifier that happens to pass the Luhn check (about one in
# ten random numbers) is taken for a card.
package mercator.policy.pii

import rego.v1

checks := {"pii_ssn", "pii_card", "pii_email", "pii_phone"}

reasons := {
	"pii_ssn": "The prompt appears to contain a US Social Security number",
	"pii_card": "The prompt appears to contain a payment card number",
	"pii_email": "The prompt appears to contain an email address",
	"pii_phone": "The prompt appears to contain a phone number",
}

deny contains {"code": code, "message": reasons[code]} if {
	some code in found
	code in checks
}

# The string texts of the request's messages, joined by line breaks (no pattern spans
# one); anything that is not a string is skipped. Scanning one string keeps the number of
# regex compilations (regorus compiles on every call) independent of the message count.
text := concat("\n", [t |
	messages := input.request.messages
	is_array(messages)
	some m in messages
	is_object(m)
	t := object.get(m, "text", null)
	is_string(t)
])

# Cheap tests that spare the patterns most texts.
_has_digits if {
	some digit in ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
	contains(text, digit)
}

found contains "pii_ssn" if {
	_has_digits
	contains(text, "-")
	some ssn in regex.find_n(`(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)`, text, -1)
	possible_ssn(ssn)
}

found contains "pii_card" if {
	_has_digits
	some candidate in regex.find_n(`(?-u:\b)[1-9](?:[ -]?[0-9]){12,18}(?-u:\b)`, text, -1)
	luhn_valid(regex.replace(candidate, `[ -]`, ""))
}

found contains "pii_email" if {
	contains(text, "@")
	regex.match(`[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?-u:\b)`, lower(text))
}

found contains "pii_phone" if {
	_has_digits
	some pattern in phone_patterns
	regex.match(pattern, text)
}

phone_patterns := [
	# North American: optional +1, area code (in parentheses or not), exchange, line.
	`(?:^|[^0-9A-Za-z])(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\)|[2-9][0-9]{2})[ .-]?[2-9][0-9]{2}[ .-][0-9]{4}(?:$|[^0-9A-Za-z])`,
	# International: + then 10 to 15 digits, single spaces, dots or dashes allowed.
	`(?:^|[^0-9A-Za-z+])\+[1-9](?:[ .-]?[0-9]){9,14}(?:$|[^0-9])`,
]

# 123-45-6789 that could be issued: not area 000, 666 or 9xx, group 00 or serial 0000.
possible_ssn(ssn) if {
	area := substring(ssn, 0, 3)
	not area in {"000", "666"}
	not startswith(area, "9")
	substring(ssn, 4, 2) != "00"
	substring(ssn, 7, 4) != "0000"
}

_digit_value := {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "7": 7, "8": 8, "9": 9}

# The Luhn sum of a digit d in position i (0 = rightmost): every second digit doubled,
# 9 taken off when that gives more than 9.
_luhn_term(d, i) := d if i % 2 == 0

_luhn_term(d, i) := [0, 2, 4, 6, 8, 1, 3, 5, 7, 9][d] if i % 2 == 1

# Whether a string of digits passes the Luhn check.
luhn_valid(digits) if {
	is_string(digits)
	regex.match(`^[0-9]+$`, digits)
	n := count(digits)
	total := sum([term |
		some i in numbers.range(0, n - 1)
		term := _luhn_term(_digit_value[substring(digits, (n - 1) - i, 1)], i)
	])
	total % 10 == 0
}
