//! Forbidden-content patterns: regular expressions that no answer may match.
//!
//! The configuration's `forbidden_content` names each pattern; the gateway checks every
//! answer's text and tool-call arguments against all of them at once (one `RegexSet`,
//! compiled when the filter is configured). A whole answer that matches is replaced by an
//! error; a stream that matches is stopped with an error event before the chunk that
//! completed the match reaches the client. Known limits of that: the part of a match that
//! came in earlier chunks has already gone out (a 20-character key may show its first 15),
//! and Anthropic's text blocks and tool inputs are checked each on its own, so a match
//! that spans two blocks is missed. The `regex` crate matches in time linear in the text,
//! so a pattern cannot be made to run away; its compiled size is bounded too.
//!
//! The caller and the evidence see the pattern's name, never the pattern, so the
//! configuration does not teach anyone how to get around it.

use regex::{RegexSet, RegexSetBuilder};
use serde::Deserialize;

/// Largest compiled size of the whole set, in bytes; a larger set is refused at configuration.
const COMPILED_SIZE_LIMIT: usize = 8 * 1024 * 1024;

/// One pattern as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForbiddenPattern {
    /// What the caller and the evidence are told matched (`aws-access-key`).
    pub name: String,
    /// The regular expression (`regex` crate syntax; `(?i)` for case-insensitive).
    pub pattern: String,
}

/// Why the patterns cannot be used; names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct PatternError {
    /// `forbidden_content[2].pattern`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// The compiled patterns, shared by every request.
#[derive(Debug, Clone)]
pub struct ForbiddenContent {
    names: Vec<String>,
    set: Option<RegexSet>,
}

impl ForbiddenContent {
    /// No patterns: nothing is forbidden.
    pub fn none() -> Self {
        Self {
            names: Vec::new(),
            set: None,
        }
    }

    /// Compiles the configured patterns, refusing an empty or duplicate name and a pattern
    /// that does not compile, can match the empty string, or is too large.
    pub fn compile(patterns: &[ForbiddenPattern]) -> Result<Self, PatternError> {
        if patterns.is_empty() {
            return Ok(Self::none());
        }
        let mut names = Vec::with_capacity(patterns.len());
        for (index, entry) in patterns.iter().enumerate() {
            let field = |part: &str| format!("forbidden_content[{index}].{part}");
            if entry.name.trim().is_empty() {
                return Err(PatternError {
                    field: field("name"),
                    reason: "must not be empty".to_owned(),
                });
            }
            if names.contains(&entry.name) {
                return Err(PatternError {
                    field: field("name"),
                    reason: "is used twice".to_owned(),
                });
            }
            // Compiled alone first, so that the error names the pattern at fault.
            let alone = regex::RegexBuilder::new(&entry.pattern)
                .size_limit(COMPILED_SIZE_LIMIT)
                .build()
                .map_err(|error| PatternError {
                    field: field("pattern"),
                    reason: error.to_string(),
                })?;
            if alone.is_match("") {
                return Err(PatternError {
                    field: field("pattern"),
                    reason: "matches the empty string, so it would match every answer".to_owned(),
                });
            }
            names.push(entry.name.clone());
        }
        let set = RegexSetBuilder::new(patterns.iter().map(|entry| entry.pattern.as_str()))
            .size_limit(COMPILED_SIZE_LIMIT)
            .build()
            .map_err(|error| PatternError {
                field: "forbidden_content".to_owned(),
                reason: error.to_string(),
            })?;
        Ok(Self {
            names,
            set: Some(set),
        })
    }

    /// Whether there is any pattern to check.
    pub fn is_empty(&self) -> bool {
        self.set.is_none()
    }

    /// The name of the first pattern (in configuration order) that any of `texts` matches.
    pub fn first_match<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> Option<&str> {
        let set = self.set.as_ref()?;
        for text in texts {
            let matched = set.matches(text);
            if let Some(index) = matched.iter().next() {
                return self.names.get(index).map(String::as_str);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(name: &str, pattern: &str) -> ForbiddenPattern {
        ForbiddenPattern {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
        }
    }

    #[test]
    fn the_first_matching_pattern_is_named() {
        let content = ForbiddenContent::compile(&[
            pattern("aws-key", r"AKIA[0-9A-Z]{16}"),
            pattern("codeword", r"(?i)\bpineapple\b"),
        ])
        .unwrap();

        assert_eq!(content.first_match(["all fine"]), None);
        assert_eq!(
            content.first_match(["fine", "the PINEAPPLE is here"]),
            Some("codeword")
        );
        assert_eq!(
            content.first_match(["AKIAABCDEFGHIJKLMNOP pineapple"]),
            Some("aws-key")
        );
    }

    #[test]
    fn bad_patterns_are_refused_by_their_entry() {
        let cases = [
            (vec![pattern("a", "(")], "forbidden_content[0].pattern"),
            (vec![pattern("a", "x*")], "forbidden_content[0].pattern"),
            (
                vec![pattern("a", "x"), pattern("a", "y")],
                "forbidden_content[1].name",
            ),
            (vec![pattern(" ", "x")], "forbidden_content[0].name"),
            (
                vec![pattern("big", r"\w{1000}\w{1000}\w{1000}")],
                "forbidden_content[0].pattern",
            ),
        ];

        for (patterns, field) in cases {
            let error = ForbiddenContent::compile(&patterns).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn no_patterns_forbid_nothing() {
        let content = ForbiddenContent::compile(&[]).unwrap();

        assert!(content.is_empty());
        assert_eq!(content.first_match(["anything"]), None);
    }
}
