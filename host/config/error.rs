//! What is wrong with a config, and where: [`ConfigError`] (file, line, column, key, message), the
//! source text that turns byte spans into lines and columns, and toml's own messages.
//!
//! This module only describes problems; it must not decide what is a problem (that is
//! `validate`) or print anything.

use std::fmt;

use toml::Spanned;

/// What is wrong with a config, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (it could not be read).
    pub line: usize,
    pub column: usize,
    /// The key or table the problem is in, e.g. `rules[2].farm`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else if self.key.is_empty() {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.column, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// What toml says is wrong. Some of its errors carry no message of their own (a value missing at
/// the end of the text, a control character in a comment); their display text is used then.
pub(super) fn toml_message(e: &toml::de::Error) -> String {
    let own = e.message().trim();
    if !own.is_empty() {
        return own.to_string();
    }
    let shown = e.to_string();
    let last = shown
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with("-->"))
        .unwrap_or("")
        .trim_start_matches(|c: char| c == '^' || c == '|' || c.is_whitespace());
    if last.is_empty() {
        "the file is not valid TOML here".to_string()
    } else {
        last.to_string()
    }
}

/// The config text, for turning byte offsets into lines.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
}

impl Source<'_> {
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        // Spans are token boundaries, but never trust an offset to be a char boundary.
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.text[..end];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        (line, column)
    }

    /// The `[table]` or `[[array]]` header in force at `line`, for errors that toml reports
    /// without a key.
    pub(super) fn table_at(&self, line: usize) -> String {
        self.text
            .lines()
            .take(line)
            .filter_map(|l| {
                let t = l.trim();
                t.starts_with('[')
                    .then(|| t.split('#').next().unwrap_or(t).trim().to_string())
            })
            .last()
            .unwrap_or_default()
    }

    pub(super) fn error<T>(
        &self,
        at: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error_at(at.span().start, key, message)
    }

    /// An error at a byte offset, for a problem whose place is not the value it is about (a key
    /// that is missing, a name made from other keys).
    pub(super) fn error_at(
        &self,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(offset);
        ConfigError {
            file: self.origin.to_string(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }
}
