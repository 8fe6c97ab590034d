//! Reading the resolved inputs the HTTP drivers receive: a templated Boolean or Integer
//! arrives as text (templates.md 6), so both forms are accepted.

use serde_json::Value;

/// `true`, or the text `true` (any case); anything else is false.
pub fn flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A non-negative integer, or text that parses as one.
pub fn uint(v: Option<&Value>) -> Option<u64> {
    match v {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_forms_are_read() {
        assert!(flag(Some(&json!(true))) && flag(Some(&json!(" TRUE "))));
        assert!(!flag(Some(&json!("yes"))) && !flag(None) && !flag(Some(&json!(1))));
        assert_eq!(uint(Some(&json!(5))), Some(5));
        assert_eq!(uint(Some(&json!(" 7 "))), Some(7));
        assert_eq!(uint(Some(&json!(-1))), None);
        assert_eq!(uint(None), None);
    }
}
