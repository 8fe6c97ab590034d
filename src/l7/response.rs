//! `internal.terminator.response`: the response an application flow ends with, built from
//! the terminator's resolved inputs and the KV (`res.status`, `res.body`).

use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use serde_json::Value;

use super::body::{self, Body};
use super::reply::{Headers, Reply};
use crate::flow::kv::Kv;

/// Why a response could not be built (the request then gets a 502).
#[derive(Debug, thiserror::Error)]
pub enum BadResponse {
    #[error("body: object without `content`")]
    NoContent,
    #[error("body: unknown encoding `{0}`")]
    Encoding(String),
    #[error("body: invalid {0}: {1}")]
    Decode(&'static str, String),
    #[error("body: expected a string or {{content, encoding}}, got {0}")]
    Shape(String),
}

/// Status: the `status` input when it is a valid code (an integer, or text that parses as
/// one), else `res.status` from the KV, else 200. An invalid code becomes 200.
fn status(input: Option<&Value>, kv: &Kv) -> StatusCode {
    let code = super::inputs::uint(input)
        .or_else(|| kv.get("res.status").and_then(|s| s.trim().parse().ok()));
    code.and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK)
}

/// Headers given to the terminator replace inherited ones: a string sets, a list appends;
/// invalid names and values are skipped.
fn headers(input: &Value, out: &mut HeaderMap) {
    let Value::Object(map) = input else {
        return;
    };
    out.clear();
    for (name, v) in map {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values: Vec<&str> = match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        for (i, s) in values.into_iter().enumerate() {
            let Ok(value) = HeaderValue::from_str(s) else {
                continue;
            };
            if i == 0 && !matches!(v, Value::Array(_)) {
                out.insert(name.clone(), value);
            } else {
                out.append(name.clone(), value);
            }
        }
    }
}

/// The bytes of a `body` input: a string, or `{content, encoding}` with encoding `text`
/// (default), `utf8`, `base64` or `hex`.
fn body_bytes(input: &Value) -> Result<Bytes, BadResponse> {
    match input {
        Value::String(s) => Ok(Bytes::from(s.clone())),
        Value::Object(o) => {
            let content = o
                .get("content")
                .and_then(Value::as_str)
                .ok_or(BadResponse::NoContent)?;
            match o.get("encoding").and_then(Value::as_str).unwrap_or("text") {
                "text" | "utf8" | "utf-8" => Ok(Bytes::from(content.to_string())),
                "base64" => base64::engine::general_purpose::STANDARD
                    .decode(content.trim())
                    .map(Bytes::from)
                    .map_err(|e| BadResponse::Decode("base64", e.to_string())),
                "hex" => hex::decode(content.trim())
                    .map(Bytes::from)
                    .map_err(|e| BadResponse::Decode("hex", e.to_string())),
                other => Err(BadResponse::Encoding(other.to_string())),
            }
        }
        other => Err(BadResponse::Shape(other.to_string())),
    }
}

/// Builds the response. `inherited` are headers and body already in the exchange (from an
/// upstream, say): kept unless the inputs replace them.
pub fn build(
    kv: &Kv,
    status_in: Option<&Value>,
    headers_in: Option<&Value>,
    body_in: Option<&Value>,
    inherited: (Headers, Body),
) -> Result<Reply, BadResponse> {
    let (mut fields, mut body) = inherited;
    if let Some(h) = headers_in.filter(|h| h.is_object()) {
        // Given headers replace the inherited ones whole: nothing to convert.
        let mut map = HeaderMap::new();
        headers(h, &mut map);
        fields = Headers::Map(map);
    }
    if let Some(b) = body_in {
        let head = fields.map_mut();
        let bytes = body_bytes(b)?;
        if !head.contains_key(CONTENT_TYPE) {
            head.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(body::guess_content_type(&bytes)),
            );
        }
        // The length is the new body's, whatever an inherited header said.
        head.remove(hyper::header::CONTENT_LENGTH);
        body = body::full(bytes);
    } else if let Some(text) = kv.get("res.body") {
        let head = fields.map_mut();
        if !head.contains_key(CONTENT_TYPE) {
            head.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        head.remove(hyper::header::CONTENT_LENGTH);
        body = body::full(text.to_string());
    }
    Ok(Reply::new(status(status_in, kv), fields, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::json;

    fn parts(r: Reply) -> (StatusCode, HeaderMap, Bytes) {
        let bytes = futures_block(r.body);
        (r.status, r.headers.into_map(), bytes)
    }

    fn futures_block(b: Body) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async { b.collect().await.map(|c| c.to_bytes()).unwrap_or_default() })
    }

    fn inherited() -> (Headers, Body) {
        let mut h = HeaderMap::new();
        h.insert("x-upstream", HeaderValue::from_static("1"));
        (h.into(), body::full("from upstream"))
    }

    #[test]
    fn status_headers_and_body_follow_the_rules() {
        let mut kv = Kv::new();
        let r = build(
            &kv,
            Some(&json!("201")),
            Some(&json!({"set-cookie": ["a=1", "b=2"], "x-one": "v", "bad name": "x", "x-num": 5})),
            Some(&json!({"content": "aGk=", "encoding": "base64"})),
            inherited(),
        )
        .expect("built");
        let (status, h, b) = parts(r);
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
        assert_eq!(h.get("x-one").map(|v| v.as_bytes()), Some(&b"v"[..]));
        assert!(
            h.get("x-upstream").is_none(),
            "given headers replace inherited ones"
        );
        assert!(h.get("x-num").is_none());
        assert_eq!(&b[..], b"hi");
        assert_eq!(
            h.get(CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"text/plain; charset=utf-8"[..])
        );

        // No inputs: inherited headers and body stay, status from res.status.
        kv.set("res.status", "404");
        let (status, h, b) = parts(build(&kv, None, None, None, inherited()).expect("built"));
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(h.get("x-upstream").is_some());
        assert_eq!(&b[..], b"from upstream");

        // An invalid code becomes 200; res.body is used when no body input is given.
        kv.set("res.body", "refused");
        let (status, _, b) =
            parts(build(&kv, Some(&json!(1000)), None, None, inherited()).expect("built"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&b[..], b"refused");
    }

    #[test]
    fn bad_bodies_are_errors() {
        let kv = Kv::new();
        for b in [
            json!({"encoding": "hex"}),
            json!({"content": "zz", "encoding": "hex"}),
            json!({"content": "x", "encoding": "rot13"}),
            json!(42),
        ] {
            assert!(
                build(
                    &kv,
                    None,
                    None,
                    Some(&b),
                    (Headers::default(), body::empty())
                )
                .is_err(),
                "{b}"
            );
        }
    }
}
