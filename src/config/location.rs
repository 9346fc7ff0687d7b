//! Errors that point into the file: `FILE:LINE:COL: message`.

use std::fmt;
use std::ops::Range;

/// One problem in an input file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong and, where it helps, what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in one file (at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads an input file: its name as the user gave it (for messages) and
/// its text. A file that cannot be read is an error at `FILE:1:1`.
pub fn read_source(path: &std::path::Path) -> Result<(String, String), ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => Ok((name, src)),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: 1,
            col: 1,
            message: format!("cannot read file: {e}"),
        }])),
    }
}

/// Turns byte offsets into line and column for one source text.
pub struct Locator<'a> {
    file: &'a str,
    src: &'a str,
}

impl<'a> Locator<'a> {
    /// A locator for `src`, read from `file`.
    pub fn new(file: &'a str, src: &'a str) -> Self {
        Self { file, src }
    }

    /// An error at the start of `span` (or at the top of the file).
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let offset = span.map_or(0, |s| s.start).min(self.src.len());
        let before = &self.src[..floor_char_boundary(self.src, offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError {
            file: self.file.to_string(),
            line,
            col,
            message: message.into(),
        }
    }

    /// A TOML syntax or type error, positioned by the parser's span.
    pub fn from_toml(&self, e: &toml::de::Error) -> ConfigError {
        self.error(e.span(), e.message().trim_end().to_string())
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let src = "a = 1\nbb = 2\n";
        let l = Locator::new("f.toml", src);
        assert_eq!(l.error(Some(0..1), "x").to_string(), "f.toml:1:1: x");
        assert_eq!(l.error(Some(6..8), "y").to_string(), "f.toml:2:1: y");
        assert_eq!(l.error(Some(11..12), "z").to_string(), "f.toml:2:6: z");
    }
}
