# Heuristic signals of prompt injection in message text.
#
# This library only describes what it sees; policies decide what to do with it (see
# policies/examples/prompt_injection.rego). A finding is an object
#
#     {"code": <signal code>, "detail": <what was seen>, "strong": <boolean>}
#
# Signal codes:
#   ignore_instructions  asks the model to ignore, disregard or forget its previous/prior/
#                        above instructions or rules                                strong
#   bypass_phrase        well-known jailbreak wording: "do anything now", "DAN mode",
#                        "you are DAN", "developer mode enabled", "jailbreak"...     strong
#   role_play            persona requests meant to shed the model's limits: "act as ...
#                        without restrictions", "you are no longer an AI", "pretend you
#                        have no rules"                                               strong
#                        plain persona requests ("pretend you are", "act as", "you are
#                        now", "roleplay as")                                         weak
#   system_prompt_probe  asks to reveal/print/repeat the system prompt or the hidden
#                        instructions                                                 strong
#   encoded_payload      a long base64-looking run (40+ characters of A-Za-z0-9+/ mixing
#                        upper case, lower case and digits, optional = padding), a hex run
#                        of 64+ digits, or a long chain of \xNN escapes               weak
#                        Base64 runs that decode are scanned again for the phrase signals
#                        above; a hit is reported under that phrase's code, strong, with
#                        "(decoded from base64)" in its detail.
#   unusual_characters   zero-width characters (U+200B..U+200D, U+2060, U+FEFF) or bidi
#                        embedding/override/isolate controls (U+202A..U+202E,
#                        U+2066..U+2069)                                              weak
#                        Unicode tag characters (U+E0000..U+E007F, invisible "ASCII
#                        smuggling"), outside emoji subdivision flag sequences        strong
#
# Matching is case-insensitive: phrases are matched on a normalised copy of the text
# (lower-cased; zero-width, bidi and tag characters removed; tabs, line breaks, no-break
# and ideographic spaces and runs of spaces turned into one space; typographic apostrophes
# turned into '), so "IGNORE   all\nprevious instructions" and
# "ig<U+200B>nore previous instructions" are caught too.
#
# Known false positives. Each is asserted as flagged in prompt_injection_test.rego, so
# this list stays honest:
#   - Quoting an attack: a security trainer or researcher writing 'attackers type "ignore
#     previous instructions"' gets ignore_instructions; explaining "what is a jailbreak"
#     gets bypass_phrase.
#   - A user resetting their own conversation: "forget the previous instructions, let's
#     start over" gets ignore_instructions.
#   - "jailbreak" about something other than a model: the common device phrasings
#     ("jailbreak my iPhone", "jailbroken phone"...) are discounted, others ("how do I
#     jailbreak a Tesla") are flagged.
#   - Someone called Dan: "act as Dan, my manager" gets bypass_phrase.
#   - Persona prompts with a stray limit word: "act as a translator without restrictions
#     on slang" gets a strong role_play. Plain "act as a translator" or "pretend you are my
#     interviewer" is only a weak role_play signal.
#   - Prompt engineers working on their own bot: "show me the system prompt you would
#     write for a support bot" gets system_prompt_probe.
#   - Legitimate encoded data: a base64 image or file, a PEM key, a JWT, a SHA-256 or longer
#     hex digest pasted into a prompt gets encoded_payload (weak).
#   - Right-to-left and complex scripts: Arabic/Hebrew text with bidi controls, Persian or
#     Indic text with U+200C/U+200D joiners, emoji sequences joined with U+200D, text pasted
#     from a file starting with a BOM (U+FEFF) get unusual_characters (weak).
#
# Not detected: paraphrases that avoid these words, other languages than English,
# homoglyph spelling, and payloads in other encodings. This is a tripwire, not a defence.
#
# Overriding: the example policy exempts a user through a key attribute
# (prompt_injection_exempt = "true") or a group (security-research); an operator can also
# decide to deny only on some codes by filtering the findings by code.
#
# Every function here accepts any value: a non-string text, or messages that are not a
# list of objects, give no finding and never an evaluation error.
package mercator.lib.prompt_injection

import rego.v1

# The roles whose messages carry text from the user or from tools (tool results being
# the usual channel of indirect injection); "function" is the legacy name of "tool".
scanned_roles := {"user", "tool", "function"}

# Zero-width characters, bidi controls and tag characters, removed before phrase matching.
_invisible := `[\x{200B}-\x{200D}\x{2060}\x{FEFF}\x{202A}-\x{202E}\x{2066}-\x{2069}\x{E0000}-\x{E007F}]`

# Word boundary on ASCII word characters; regorus' regex engine is built without Unicode
# word data, so `\b`, `\w`, `\d`, `\s` and `(?i)` are avoided throughout.
_b := `(?-u:\b)`

_limits := `(?:restrictions?|limitations?|limits|filters?|filtering|censorship|rules|guidelines|ethics|ethical guidelines|morals|morality|safety|safeguards|boundaries|policies|content polic(?:y|ies)|guardrails)`

_ai := `(?:an? )?(?:ai|a\.i\.|assistant|ai assistant|language model|chatbot|llm|bot|chatgpt|gpt|claude)`

# Phrase signals, matched on the normalised text. A pattern runs only when the text
# contains one of its `keywords` (see "Performance" below). An entry with `unless` counts
# only when it matches more often than its `unless` pattern (benign uses of the word).
phrase_signals := [
	{
		"code": "ignore_instructions",
		"strong": true,
		"detail": "asks to ignore, disregard or forget previous instructions",
		"keywords": ["ignore", "disregard", "forget", "skip", "override", "overlook", "discard", "abandon", "drop"],
		"pattern": concat("", [
			_b,
			`(?:ignore|disregard|forget|skip|override|overlook|discard|abandon|drop) (?:all |any |every |each )?(?:of )?(?:the |your |my |these |those |this |its )?`,
			`(?:previous|prior|above|earlier|preceding|former|foregoing|original|initial|existing|old|system|developer)(?: [a-z-]+){0,2} `,
			`(?:instructions?|rules?|guidelines?|directions?|directives?|prompts?|commands?|orders?|constraints?|guardrails?|polic(?:y|ies)|programming|context)`,
			_b,
		]),
	},
	{
		"code": "ignore_instructions",
		"strong": true,
		"detail": "asks to ignore everything said before",
		"keywords": ["ignore", "disregard", "forget"],
		"pattern": concat("", [
			_b,
			`(?:ignore|disregard|forget) (?:everything|anything|all)(?: that)? (?:above|you (?:were|have been|'ve been) (?:told|given|instructed)|(?:in )?your (?:instructions|system prompt))`,
			_b,
		]),
	},
	{
		"code": "ignore_instructions",
		"strong": true,
		"detail": "asks not to follow previous instructions",
		"keywords": ["follow", "obey"],
		"pattern": concat("", [
			_b,
			`(?:do not|don't|never|stop) (?:follow|obey|following|obeying) (?:any of )?(?:your|the|any) (?:previous|prior|original|initial|system|developer)(?: [a-z-]+){0,2} (?:instructions|rules|guidelines|prompt)`,
			_b,
		]),
	},
	{
		"code": "bypass_phrase",
		"strong": true,
		"detail": "uses a known jailbreak phrase",
		"keywords": ["do anything now", "mode", "dan prompt"],
		"pattern": concat("", [
			_b,
			`(?:do anything now|dan mode|dan prompt|developer mode (?:enabled|activated|on|output)|enable developer mode|(?:stan|dude|aim|evil|unrestricted|unfiltered|uncensored) mode|god mode (?:enabled|activated)|no restrictions mode)`,
			_b,
		]),
	},
	{
		"code": "bypass_phrase",
		"strong": true,
		"detail": "asks the model to become DAN",
		"keywords": ["dan"],
		"pattern": concat("", [
			_b,
			`(?:you are|you're|you will be|you'll be|act as|pretend to be|stay in character as|respond as|answer as|become) (?:now )?(?:a |the )?dan`,
			_b,
		]),
	},
	{
		"code": "bypass_phrase",
		"strong": true,
		"detail": "mentions a jailbreak",
		"keywords": ["jail"],
		"pattern": concat("", [_b, `(?:jail-?break(?:s|ing|ed)?|jailbroken)`, _b]),
		"unless": concat("", [
			_b,
			`(?:jail-?break(?:s|ing|ed)?|jailbroken) (?:my |an? |the |your |this |his |her |their |our )?(?:old |new |own )?`,
			`(?:iphones?|ipads?|ipods?|phones?|ios|android|devices?|consoles?|kindles?|ps[0-9]|playstations?|switch|xbox|firesticks?|fire stick|apple tv|tablets?|routers?)`,
			_b,
		]),
	},
	{
		"code": "role_play",
		"strong": true,
		"detail": "tells the model it is no longer an AI or no longer bound by its rules",
		"keywords": ["no longer"],
		"pattern": concat("", [
			_b,
			`(?:you are|you're) no longer (?:`, _ai, `|bound by|restricted|limited|required to|subject to)`,
			_b,
		]),
	},
	{
		"code": "role_play",
		"strong": true,
		"detail": "asks the model to act without restrictions",
		"keywords": ["without", "with no", "free of", "free from", "ignoring", "unbound", "unconstrained", "regardless"],
		"pattern": concat("", [
			_b,
			`(?:act|behave|respond|answer|reply|roleplay|role-play|role play|pretend|operate|speak|talk)`,
			_b,
			`[^.!?\x{80}-\x{10FFFF}]{0,80}`,
			_b,
			`(?:without|with no|free (?:of|from)|ignoring|unbound by|unconstrained by|regardless of) (?:any |all |your |the |its |of )*`,
			_limits,
			_b,
		]),
	},
	{
		"code": "role_play",
		"strong": true,
		"detail": "asks the model to pretend it is unrestricted",
		"keywords": ["pretend", "imagine", "suppose"],
		"pattern": concat("", [
			_b,
			`(?:pretend|imagine|suppose) (?:that )?(?:you are|you're|to be|you were) (?:`,
			`not `, _ai,
			`|(?:an? |the )?(?:unrestricted|unfiltered|uncensored|evil|rogue|jailbroken|amoral|unethical|unaligned) (?:ai|assistant|model|chatbot|llm|version|bot|entity|character)`,
			`)`,
			_b,
		]),
	},
	{
		"code": "role_play",
		"strong": true,
		"detail": "asks the model to pretend it has no rules",
		"keywords": ["pretend", "imagine", "suppose"],
		"pattern": concat("", [
			_b,
			`(?:pretend|imagine|suppose) (?:that )?you (?:have|had|do not have|don't have) (?:no|any) `,
			_limits,
			_b,
		]),
	},
	{
		"code": "role_play",
		"strong": false,
		"detail": "asks the model to take on a persona",
		"keywords": ["pretend", "act as", "roleplay", "role-play", "role play", "from now on", "you are now"],
		"pattern": concat("", [
			_b,
			`(?:pretend (?:that )?(?:you are|you're|to be)|act as|roleplay as|role-play as|role play as|from now on,? you (?:are|will be)|you are now)`,
			_b,
		]),
	},
	{
		"code": "system_prompt_probe",
		"strong": true,
		"detail": "asks to reveal the system prompt",
		"keywords": ["prompt", "instructions", "system "],
		"pattern": concat("", [
			_b,
			`(?:reveal|print|show|display|output|repeat|recite|tell|give|share|leak|dump|disclose|expose|write|list|paste|spell out|type out)`,
			`(?: me| us| out)? (?:all )?(?:of )?(?:your|the) (?:full |entire |complete |exact |whole |original |verbatim |actual |real )*`,
			`(?:(?:system|developer|hidden|secret|initial|original|pre-?) ?(?:prompt|instructions)|system (?:message|rules|configuration))`,
			_b,
		]),
	},
	{
		"code": "system_prompt_probe",
		"strong": true,
		"detail": "asks what its system prompt or hidden instructions are",
		"keywords": ["what is your", "what are your", "what was your", "what were your", "what instructions", "what rules", "what guidelines"],
		"pattern": concat("", [
			_b,
			`(?:what (?:is|are|was|were) your (?:full |exact |original |initial |hidden |secret )*(?:system ?prompt|system message|initial instructions|hidden instructions|secret instructions|instructions)`,
			`|what (?:instructions|rules|guidelines) (?:were|have) you (?:been )?(?:given|told))`,
			_b,
		]),
	},
	{
		"code": "system_prompt_probe",
		"strong": true,
		"detail": "asks to repeat the text above its first message",
		"keywords": ["above", "before"],
		"pattern": concat("", [
			_b,
			`(?:repeat|print|output|reproduce|echo|copy) (?:all |of |the |every |each )*(?:words|text|everything|content|instructions|lines|tokens) (?:above|before)`,
			`(?: this| that| the)?(?: line| message| point| conversation)?,? (?:starting|beginning|verbatim|word for word|exactly)`,
			_b,
		]),
	},
]

# The text as phrases are matched: lower case, invisible characters removed, white space
# folded, typographic apostrophes plain.
normalize(text) := t if {
	is_string(text)
	t0 := _without_invisible(lower(text))
	t1 := replace(replace(replace(replace(t0, "\u00a0", " "), "\u2009", " "), "\u202f", " "), "\u3000", " ")
	t2 := regex.replace(t1, `[\t\n\x{0B}\x{0C}\r ]+`, " ")
	t := replace(replace(replace(t2, "\u2019", "'"), "\u2018", "'"), "\u02bc", "'")
}

# Performance: regorus compiles a pattern on every regex.* call (its `cache` feature is
# off), and a pattern with classes costs 0.1-0.3 ms to compile. So the costly patterns run
# only once a cheap test (a plain substring, or the one `_invisible` check) says they may
# match, and messages_findings scans the joined messages once before looking at each.

_has_invisible(text) if regex.match(_invisible, text)

_without_invisible(text) := regex.replace(text, _invisible, "") if _has_invisible(text) else := text

_mentions(t, keywords) if {
	some keyword in keywords
	contains(t, keyword)
}

_matches(signal, t) if {
	_mentions(t, signal.keywords)
	not signal.unless
	regex.match(signal.pattern, t)
}

_matches(signal, t) if {
	_mentions(t, signal.keywords)
	signal.unless
	count(regex.find_n(signal.pattern, t, -1)) > count(regex.find_n(signal.unless, t, -1))
}

_finding(signal) := {"code": signal.code, "detail": signal.detail, "strong": signal.strong}

# Findings of the phrase signals in one string; empty for anything else.
phrase_findings(text) := {f |
	is_string(text)
	t := normalize(text)
	some signal in phrase_signals
	_matches(signal, t)
	f := _finding(signal)
}

# Emoji subdivision flags (England, Scotland, Wales...) are a black flag followed by tag
# letters and a cancel tag: the one legitimate use of tag characters.
_flag_sequence := `\x{1F3F4}[\x{E0020}-\x{E007E}]{1,8}\x{E007F}`

_character_signals := [
	{
		"code": "unusual_characters",
		"strong": false,
		"detail": "contains zero-width characters",
		"pattern": `[\x{200B}-\x{200D}\x{2060}\x{FEFF}]`,
	},
	{
		"code": "unusual_characters",
		"strong": false,
		"detail": "contains bidirectional override or isolate controls",
		"pattern": `[\x{202A}-\x{202E}\x{2066}-\x{2069}]`,
	},
	{
		"code": "unusual_characters",
		"strong": true,
		"detail": "contains invisible Unicode tag characters",
		"pattern": `[\x{E0000}-\x{E007F}]`,
	},
]

# Findings of invisible or direction-changing characters in one string.
character_findings(text) := {f |
	is_string(text)
	_has_invisible(text)
	t := regex.replace(text, _flag_sequence, "")
	some signal in _character_signals
	regex.match(signal.pattern, t)
	f := _finding(signal)
}

# Runs of base64 characters; hex digits are a subset, so hex runs are found among them.
_runs(text) := regex.find_n(`[A-Za-z0-9+/]{40,}={0,2}`, _without_invisible(text), -1)

# A run that mixes upper case, lower case and digits (or + and /) looks encoded; a long
# plain word or a lower-case identifier does not.
_looks_encoded(run) if {
	regex.match(`[A-Z]`, run)
	regex.match(`[a-z]`, run)
	regex.match(`[0-9+/]`, run)
}

# Findings of encoded data in one string, including the phrase signals found in
# base64 runs once decoded.
encoded_findings(text) := ((hex | escapes) | base64_runs) | decoded if {
	is_string(text)
	runs := _runs(text)
	encoded := [run | some run in runs; _looks_encoded(run)]
	hex := {f |
		some run in runs
		regex.match(`[0-9A-Fa-f]{64,}`, run)
		f := {"code": "encoded_payload", "detail": "contains a long run of hexadecimal digits", "strong": false}
	}
	escapes := {f |
		_mentions(text, ["\\x", "\\X"])
		regex.match(`(?:\\[xX][0-9A-Fa-f]{2}){16,}`, text)
		f := {"code": "encoded_payload", "detail": "contains a long chain of \\x escapes", "strong": false}
	}
	base64_runs := {f |
		count(encoded) > 0
		f := {"code": "encoded_payload", "detail": "contains a long base64-looking run", "strong": false}
	}
	decoded := {f |
		some run in encoded
		base64.is_valid(run)
		some p in phrase_findings(base64.decode(run))
		f := object.union(p, {"detail": concat(" ", [p.detail, "(decoded from base64)"]), "strong": true})
	}
} else := set()

# Every finding in one string; empty for anything that is not a string.
findings(text) := (phrase_findings(text) | character_findings(text)) | encoded_findings(text)

# The string texts of the messages of the roles in scanned_roles, with their index.
_scanned(messages) := [[i, role, text] |
	is_array(messages)
	some i, m in messages
	is_object(m)
	role := object.get(m, "role", null)
	is_string(role)
	role in scanned_roles
	text := object.get(m, "text", null)
	is_string(text)
]

# The findings of a list of messages ({"role", "text"} objects), for the roles in
# scanned_roles. Each finding also carries the message's index and role. Tolerates a
# non-list, non-object items, and missing or non-string roles and texts.
messages_findings(messages) := {f |
	scanned := _scanned(messages)
	# One scan of all the texts together; each message is looked at only on a hit.
	count(findings(concat("\n", [text | some [_, _, text] in scanned]))) > 0
	some [i, role, text] in scanned
	some finding in findings(text)
	f := object.union(finding, {"message_index": i, "role": role})
}

# The findings of the request's messages.
message_findings := messages_findings(input.request.messages) if {
	is_array(input.request.messages)
} else := set()

# The strong findings among `fs`: those a policy may deny on.
strong(fs) := {f |
	is_set(fs)
	some f in fs
	is_object(f)
	object.get(f, "strong", false) == true
}

# Whether any finding among `fs` is strong.
has_strong(fs) if count(strong(fs)) > 0

# The distinct codes of the findings `fs`, sorted.
codes(fs) := sort({c |
	is_set(fs)
	some f in fs
	is_object(f)
	c := object.get(f, "code", null)
	is_string(c)
})
