//! [`ConfigError`]: one problem with the config file, located by file, line, column and key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a config file was refused.
///
/// Displays as `FILE:LINE:COL: KEY: MESSAGE`, leaving out the parts that are unknown, e.g.
///
/// ```text
/// /etc/vmnap.toml:7:7: guest[0].mac: `02:00:00:00:01` is not a MAC address (want six hex pairs like 02:00:00:00:01:01)
/// /etc/vmnap.toml:12:1: guest[1]: unknown key `queu_frames`; expected one of `name`, `bridge`, ...
/// /etc/vmnap.toml: cannot read: No such file or directory (os error 2)
/// ```
///
/// The binary exits with [`EX_CONFIG`](crate::EX_CONFIG) after printing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file, as given to [`Config::load`](crate::Config::load) or
    /// [`Config::parse`](crate::Config::parse).
    pub file: PathBuf,
    /// 1-based line of the offending text, if known.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending text, if known.
    pub column: Option<usize>,
    /// The key at fault, as `api.socket`, `guest[2].mac` or `guest[2].wake_on[1]`, if known.
    pub key: Option<String>,
    /// What is wrong, in sentence case without a trailing period.
    pub message: String,
}

impl ConfigError {
    /// An error at the start of byte range `span` of `text`.
    pub(crate) fn at(
        file: &Path,
        text: &str,
        span: Range<usize>,
        key: impl Into<Option<String>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(text, span.start);
        ConfigError {
            file: file.to_path_buf(),
            line: Some(line),
            column: Some(column),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (counted in characters) of byte `offset` in `text`.
///
/// Offsets past the end are clamped to the end, and offsets inside a character are moved back to
/// its start, so any offset is accepted.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 1), (1, 2));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        // `é` is two bytes; the `\n` after it is the fourth character of line 2.
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
    }

    #[test]
    fn line_column_accepts_any_offset() {
        let text = "aé";
        // Inside `é`: moved back to its start.
        assert_eq!(line_column(text, 2), (1, 2));
        assert_eq!(line_column(text, 99), (1, 3));
        assert_eq!(line_column("", 5), (1, 1));
    }

    #[test]
    fn display_leaves_out_unknown_parts() {
        let mut e = ConfigError {
            file: PathBuf::from("/etc/vmnap.toml"),
            line: Some(7),
            column: Some(7),
            key: Some("guest[0].mac".into()),
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "/etc/vmnap.toml:7:7: guest[0].mac: bad");
        e.column = None;
        assert_eq!(e.to_string(), "/etc/vmnap.toml:7: guest[0].mac: bad");
        e.line = None;
        e.key = None;
        assert_eq!(e.to_string(), "/etc/vmnap.toml: bad");
    }
}
