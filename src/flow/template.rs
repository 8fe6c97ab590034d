//! `{{key}}` templates: parsed once at load, rendered per connection against the KV store.
//!
//! Sans-IO: parsing and rendering take strings and a lookup function, nothing else.

use std::borrow::Cow;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// A placeholder whose key is itself a template (placeholders nest).
    Key(Vec<Part>),
}

/// A parsed template. Strings without placeholders are stored as a single text part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a string is not a usable template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` placeholder")]
    Unclosed,
    #[error("placeholders nested deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} template nodes")]
    TooManyNodes(usize),
}

/// Limits applied when parsing and rendering (`MAX_TEMPLATE_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub parse_depth: usize,
    pub parse_nodes: usize,
    pub result_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            parse_depth: 5,
            parse_nodes: 50,
            result_size: 65_536,
        }
    }
}

impl Limits {
    pub fn from_settings() -> Self {
        let s = crate::settings::get();
        Self {
            parse_depth: s.max_template_parse_depth,
            parse_nodes: s.max_template_parse_nodes,
            result_size: s.max_template_result,
        }
    }
}

/// True when the string contains a placeholder opening.
pub fn has_placeholder(s: &str) -> bool {
    s.contains("{{")
}

impl Template {
    /// A template that renders to `s` unchanged.
    pub fn literal(s: &str) -> Self {
        Self {
            parts: vec![Part::Text(s.to_string())],
        }
    }

    /// Parses `s`. An unclosed `{{` is an error; so is exceeding the depth or node limit.
    pub fn parse(s: &str, limits: Limits) -> Result<Self, TemplateError> {
        let mut stack: Vec<Vec<Part>> = vec![Vec::new()];
        let mut text = String::new();
        let mut nodes = 0usize;
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{{") {
                flush(&mut text, stack.last_mut(), &mut nodes);
                stack.push(Vec::new());
                if stack.len() - 1 > limits.parse_depth {
                    return Err(TemplateError::TooDeep(limits.parse_depth));
                }
                rest = r;
            } else if stack.len() > 1 && rest.starts_with("}}") {
                flush(&mut text, stack.last_mut(), &mut nodes);
                let key = stack.pop().unwrap_or_default();
                nodes += 1;
                if let Some(top) = stack.last_mut() {
                    top.push(Part::Key(key));
                }
                rest = &rest[2..];
            } else {
                let ch = rest.chars().next().unwrap_or_default();
                text.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
            if nodes > limits.parse_nodes {
                return Err(TemplateError::TooManyNodes(limits.parse_nodes));
            }
        }
        if stack.len() > 1 {
            return Err(TemplateError::Unclosed);
        }
        flush(&mut text, stack.last_mut(), &mut nodes);
        if nodes > limits.parse_nodes {
            return Err(TemplateError::TooManyNodes(limits.parse_nodes));
        }
        Ok(Self {
            parts: stack.pop().unwrap_or_default(),
        })
    }

    /// True when rendering can differ from the literal text.
    pub fn is_dynamic(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Key(_)))
    }

    /// True when rendering may look up a key `pred` accepts: a key named outright is tested;
    /// a key built from other keys (`{{a.{{b}}}}`) may be anything, so it counts.
    pub fn may_read(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Text(_) => false,
            Part::Key(key) => match key.as_slice() {
                [Part::Text(k)] => pred(k),
                [] => false,
                _ => true,
            },
        })
    }

    /// Renders with `lookup`. Unknown keys and keys containing braces stay literal
    /// (`{{key}}`); the result is cut at the last piece that fits in `max_size` bytes.
    pub fn render<'a, F>(&self, lookup: &F, max_size: usize) -> String
    where
        F: Fn(&str) -> Option<Cow<'a, str>>,
    {
        let mut out = String::new();
        for part in &self.parts {
            let piece: Cow<'_, str> = match part {
                Part::Text(t) => Cow::Borrowed(t.as_str()),
                Part::Key(k) => Cow::Owned(render_key(k, lookup, max_size)),
            };
            if out.len() + piece.len() > max_size {
                break;
            }
            out.push_str(&piece);
        }
        out
    }
}

fn flush(text: &mut String, top: Option<&mut Vec<Part>>, nodes: &mut usize) {
    if !text.is_empty() {
        if let Some(top) = top {
            top.push(Part::Text(std::mem::take(text)));
            *nodes += 1;
        }
    }
}

fn render_key<'a, F>(key_parts: &[Part], lookup: &F, max_size: usize) -> String
where
    F: Fn(&str) -> Option<Cow<'a, str>>,
{
    let key = Template {
        parts: key_parts.to_vec(),
    }
    .render(lookup, max_size);
    if key.contains('{') || key.contains('}') {
        tracing::warn!(key = %key, "template key contains braces; not resolved");
        return format!("{{{{{key}}}}}");
    }
    match lookup(&key) {
        Some(v) => v.into_owned(),
        None => format!("{{{{{key}}}}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key named outright is tested; one built from other keys counts whatever it is.
    #[test]
    fn may_read_tests_named_keys_and_counts_built_ones() {
        let http = |k: &str| k.starts_with("http.");
        let t = |s: &str| Template::parse(s, Limits::from_settings()).expect("template");
        assert!(t("{{http.host}}").may_read(&http));
        assert!(t("a {{req.path}} b {{http.path}}").may_read(&http));
        assert!(!t("{{conn.ip}}|{{req.header.host}}").may_read(&http));
        assert!(!t("http.host, no placeholder").may_read(&http));
        assert!(t("{{http.{{req.query}}}}").may_read(&http));
        assert!(t("{{{{req.query}}}}").may_read(&http));
    }
    use std::collections::HashMap;

    fn render(t: &str, kv: &[(&str, &str)]) -> String {
        let map: HashMap<String, String> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tpl = Template::parse(t, Limits::default()).expect("parses");
        tpl.render(&|k: &str| map.get(k).map(|v| Cow::Owned(v.clone())), 65_536)
    }

    #[test]
    fn plain_nested_and_unknown_keys() {
        assert_eq!(
            render("ip={{conn.ip}}", &[("conn.ip", "1.2.3.4")]),
            "ip=1.2.3.4"
        );
        assert_eq!(
            render("{{a.{{b}}}}", &[("b", "x"), ("a.x", "deep")]),
            "deep",
            "inner placeholder builds the outer key"
        );
        assert_eq!(render("{{missing}}!", &[]), "{{missing}}!");
        assert_eq!(
            render("{{ conn.ip }}", &[("conn.ip", "1")]),
            "{{ conn.ip }}",
            "no trimming"
        );
        assert_eq!(render("a { b } c", &[]), "a { b } c");
    }

    #[test]
    fn values_smuggling_braces_are_not_looked_up() {
        assert_eq!(
            render("{{{{k}}}}", &[("k", "{x}"), ("{x}", "no")]),
            "{{{x}}}"
        );
    }

    #[test]
    fn parse_limits_and_unclosed() {
        assert_eq!(
            Template::parse("{{a", Limits::default()),
            Err(TemplateError::Unclosed)
        );
        let deep = "Deep: {{a.{{b.{{c.{{d.{{e.{{f.{{g}}}}}}}}}}}}}}";
        assert_eq!(
            Template::parse(deep, Limits::default()),
            Err(TemplateError::TooDeep(5))
        );
        let many = "{{a}}".repeat(60);
        assert!(matches!(
            Template::parse(&many, Limits::default()),
            Err(TemplateError::TooManyNodes(50))
        ));
    }

    #[test]
    fn result_is_truncated_at_a_piece_boundary() {
        let tpl = Template::parse("abc{{k}}def", Limits::default()).expect("parses");
        let out = tpl.render(&|_: &str| Some(Cow::Borrowed("0123456789")), 8);
        assert_eq!(out, "abc");
    }
}
