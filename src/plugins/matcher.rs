//! `internal.common.match`: compare two strings.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Contains,
    StartsWith,
    EndsWith,
    Regex,
}

impl Operator {
    /// Parses an operator or one of its synonyms (case-insensitive).
    pub fn parse(s: &str) -> Option<Operator> {
        Some(match s.to_ascii_lowercase().as_str() {
            "==" | "eq" | "equal" | "equals" => Operator::Eq,
            "!=" | "ne" | "notequal" | "not_equal" => Operator::Ne,
            "contains" | "contain" => Operator::Contains,
            "startswith" | "starts_with" => Operator::StartsWith,
            "endswith" | "ends_with" => Operator::EndsWith,
            "regex" | "re" | "match" => Operator::Regex,
            _ => return None,
        })
    }
}

/// Evaluates `left <op> right`. `compiled` is the pre-compiled regex when `right` was literal.
pub fn eval(
    op: Option<Operator>,
    left: &str,
    right: &str,
    compiled: Option<&regex::Regex>,
) -> bool {
    match op {
        Some(Operator::Eq) => left == right,
        Some(Operator::Ne) => left != right,
        Some(Operator::Contains) => left.contains(right),
        Some(Operator::StartsWith) => left.starts_with(right),
        Some(Operator::EndsWith) => left.ends_with(right),
        Some(Operator::Regex) => match compiled {
            Some(re) => re.is_match(left),
            None => match regex::Regex::new(right) {
                Ok(re) => re.is_match(left),
                Err(e) => {
                    tracing::warn!("match: invalid regex {right:?}: {e}");
                    false
                }
            },
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_and_synonyms() {
        let t = |op: &str, l: &str, r: &str| eval(Operator::parse(op), l, r, None);
        assert!(t("==", "a", "a") && t("EQUALS", "a", "a") && !t("eq", "a", "A"));
        assert!(t("not_equal", "a", "b"));
        assert!(t("contain", "hello", "ell"));
        assert!(t("starts_with", "10.0.0.1", "10.") && t("endswith", "x.example.com", ".com"));
        assert!(t("re", "GET /api/v1", r"^GET /api/v\d+$"));
        assert!(!t("regex", "x", "("), "invalid regex is false");
        assert!(!t("between", "a", "b"), "unknown operator is false");
    }
}
