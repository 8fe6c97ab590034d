//! Config problems, each naming the file and the place inside it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found while loading a config dir: `FILE: path.to.step: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the config dir.
    pub file: String,
    /// Dotted path inside the document (empty for whole-file problems).
    pub at: String,
    pub message: String,
    pub severity: Severity,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lvl = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        if self.at.is_empty() {
            write!(f, "{}: {lvl}{}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {lvl}{}", self.file, self.at, self.message)
        }
    }
}

/// Collects problems for one file.
#[derive(Debug, Default)]
pub struct Problems {
    file: String,
    pub list: Vec<Problem>,
}

impl Problems {
    pub fn for_file(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            list: Vec::new(),
        }
    }

    pub fn error(&mut self, at: &str, message: impl Into<String>) {
        self.push(at, message.into(), Severity::Error);
    }

    pub fn warn(&mut self, at: &str, message: impl Into<String>) {
        self.push(at, message.into(), Severity::Warning);
    }

    fn push(&mut self, at: &str, message: String, severity: Severity) {
        self.list.push(Problem {
            file: self.file.clone(),
            at: at.to_string(),
            message,
            severity,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|p| p.severity == Severity::Error)
    }
}

/// Joins a dotted path.
pub fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}
