//! File formats: every config file is read into one data model (`serde_json::Value`).
//! TOML, YAML, JSON and (our addition) RON.

use std::path::Path;

use serde_json::{Map, Number, Value};

/// A supported format, in Vane's probe order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
    Json,
    Ron,
}

/// Extensions in probe order.
pub const EXTENSIONS: &[&str] = &["toml", "yaml", "yml", "json", "ron"];

impl Format {
    pub fn from_path(p: &Path) -> Option<Format> {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            "ron" => Some(Format::Ron),
            _ => None,
        }
    }
}

/// A document that does not parse in its format; the message carries the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub format: Format,
    pub message: String,
}

/// Parses text in the given format.
pub fn parse(format: Format, text: &str) -> Result<Value, SyntaxError> {
    let err = |message: String| SyntaxError { format, message };
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| err(e.to_string())),
        Format::Yaml => {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            serde_norway::from_str::<Value>(text).map_err(|e| err(e.to_string()))
        }
        Format::Toml => toml::from_str::<Value>(text)
            .map_err(|e| err(e.to_string().trim_end().replace('\n', " "))),
        Format::Ron => {
            let v: ron::Value = ron::Options::default()
                .from_str(text)
                .map_err(|e| err(e.to_string()))?;
            Ok(from_ron(v))
        }
    }
}

impl Format {
    /// The extension files of this format are written with.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Toml => "toml",
            Format::Yaml => "yaml",
            Format::Json => "json",
            Format::Ron => "ron",
        }
    }

    /// A format by name (`toml`, `yaml`/`yml`, `json`, `ron`).
    pub fn by_name(name: &str) -> Option<Format> {
        Format::from_path(Path::new(&format!("x.{name}")))
    }
}

/// Why a document cannot be written in a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("TOML has no null; this document has one")]
    NoNull,
    #[error("cannot be written as {format:?}: {message}")]
    Unwritable { format: Format, message: String },
    #[error("does not survive a round trip through {0:?}")]
    RoundTrip(Format),
    #[error("reads back with an error: {0}")]
    ReadBack(SyntaxError),
}

/// Writes `v` as text of `format`, checked to read back as the same model.
pub fn render(format: Format, v: &Value) -> Result<String, RenderError> {
    let unwritable = |e: &dyn std::fmt::Display| RenderError::Unwritable {
        format,
        message: e.to_string(),
    };
    if v.is_null() {
        // An empty document (an empty nodes file) stays empty.
        return Ok(match format {
            Format::Toml | Format::Yaml => String::new(),
            Format::Json | Format::Ron => "{}\n".into(),
        });
    }
    let text = match format {
        Format::Json => serde_json::to_string_pretty(v)
            .map(|t| t + "\n")
            .map_err(|e| unwritable(&e)),
        Format::Yaml => serde_norway::to_string(v).map_err(|e| unwritable(&e)),
        Format::Toml => {
            if has_null(v) {
                return Err(RenderError::NoNull);
            }
            toml::to_string_pretty(v).map_err(|e| unwritable(&e))
        }
        Format::Ron => {
            let pretty = ron::ser::PrettyConfig::default();
            ron::ser::to_string_pretty(v, pretty)
                .map(|t| t + "\n")
                .map_err(|e| unwritable(&e))
        }
    }?;
    match parse(format, &text) {
        Ok(back) if same(&back, v) => Ok(text),
        Ok(_) => Err(RenderError::RoundTrip(format)),
        Err(e) => Err(RenderError::ReadBack(e)),
    }
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}

/// Equal models, where an empty document (null) and an empty map are the same thing.
fn same(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(Map::is_empty);
    a == b || (empty(a) && empty(b))
}

/// Maps RON onto the common model: structs and maps become maps, `Some(x)` is `x`, `None` and
/// unit are null (and dropped from maps, i.e. absent).
fn from_ron(v: ron::Value) -> Value {
    use ron::Value as R;
    match v {
        R::Bool(b) => Value::Bool(b),
        R::Char(c) => Value::String(c.to_string()),
        R::String(s) => Value::String(s),
        R::Bytes(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        R::Number(n) => number(n),
        R::Option(Some(x)) => from_ron(*x),
        R::Option(None) | R::Unit => Value::Null,
        R::Seq(items) => Value::Array(items.into_iter().map(from_ron).collect()),
        R::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    R::String(s) => s,
                    R::Char(c) => c.to_string(),
                    other => match from_ron(other) {
                        Value::String(s) => s,
                        x => x.to_string(),
                    },
                };
                let v = from_ron(v);
                if !v.is_null() {
                    out.insert(key, v);
                }
            }
            Value::Object(out)
        }
    }
}

fn number(n: ron::Number) -> Value {
    use ron::Number as N;
    let v = match n {
        N::I8(x) => Number::from(x),
        N::I16(x) => Number::from(x),
        N::I32(x) => Number::from(x),
        N::I64(x) => Number::from(x),
        N::U8(x) => Number::from(x),
        N::U16(x) => Number::from(x),
        N::U32(x) => Number::from(x),
        N::U64(x) => Number::from(x),
        N::F32(f) => return Number::from_f64(f.get() as f64).map_or(Value::Null, Value::Number),
        N::F64(f) => return Number::from_f64(f.get()).map_or(Value::Null, Value::Number),
        #[allow(unreachable_patterns)]
        _ => return Value::Null,
    };
    Value::Number(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_formats_give_the_same_model() {
        let json = r#"{"connection": {"internal.transport.proxy": {"input": {"target.ip": "127.0.0.1", "target.port": 80}}}}"#;
        let yaml = "connection:\n  internal.transport.proxy:\n    input: { target.ip: 127.0.0.1, target.port: 80 }\n";
        let toml = "[connection.\"internal.transport.proxy\".input]\n\"target.ip\" = \"127.0.0.1\"\n\"target.port\" = 80\n";
        let ron = r#"{ "connection": { "internal.transport.proxy": ( input: { "target.ip": "127.0.0.1", "target.port": 80 } ) } }"#;
        let want = parse(Format::Json, json).expect("json");
        assert_eq!(parse(Format::Yaml, yaml).expect("yaml"), want);
        assert_eq!(parse(Format::Toml, toml).expect("toml"), want);
        assert_eq!(parse(Format::Ron, ron).expect("ron"), want);
    }

    #[test]
    fn ron_legacy_shape_with_structs_and_options() {
        let ron = r#"( protocols: [ ( name: "tls", priority: 1, detect: (method: "magic", pattern: "0x16"), session: None, destination: (type: "forward", forward: Some((strategy: "serial", targets: [(ip: "127.0.0.1", port: 8443)]))) ) ] )"#;
        let v = parse(Format::Ron, ron).expect("ron");
        assert_eq!(v["protocols"][0]["detect"]["pattern"], "0x16");
        assert_eq!(
            v["protocols"][0]["destination"]["forward"]["targets"][0]["port"],
            8443
        );
        assert!(v["protocols"][0].get("session").is_none(), "None is absent");
    }

    #[test]
    fn errors_carry_a_position() {
        let e = parse(Format::Yaml, "a: [1, 2\n").expect_err("bad yaml");
        assert!(e.message.contains("line"), "{e}");
        assert_eq!(e.format, Format::Yaml);
        let e = parse(Format::Json, "{\n  \"a\": }").expect_err("bad json");
        assert!(e.message.contains("line 2"), "{e}");
    }
}
