//! One HTTP request/response pair as an application flow sees it: keys computed from its
//! headers on demand, and the HTTP drivers that fill in the response.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderMap;
use hyper::http::request;
use hyper::StatusCode;
use serde_json::Value;

use super::body::Body;
use super::buffer::{buffer, Buffered, Refused};
use super::h1::write::declared;
use super::reply::Headers;
use super::L7;
use crate::flow::catalogue::Builtin;
use crate::flow::exec::{Driven, DriverError, Exchange, Inputs};
use crate::flow::kv::Kv;
use crate::flow::step::{REQ_BODY, RES_BODY};

pub struct HttpExchange {
    pub rt: Arc<L7>,
    pub peer: SocketAddr,
    /// The client's IP as a field value, made once per connection (for `X-Forwarded-For`).
    pub peer_ip: hyper::header::HeaderValue,
    /// The client came over TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    pub req: request::Parts,
    /// The client's request body until a driver takes it.
    pub body: Option<Body>,
    /// What a driver produced (status, headers, body), until the terminator sends it.
    pub resp: Option<(StatusCode, Headers, Body)>,
    /// Bodies buffered for templates (`None`: not asked for yet).
    pub req_buf: Option<Result<Buffered, Refused>>,
    pub res_buf: Option<Result<Buffered, Refused>>,
    /// The client's side of a WebSocket upgrade (HTTP/1.x requests that asked for one, and
    /// extended CONNECT over HTTP/2).
    pub ws_client: Option<super::websocket::ClientSide>,
    /// The upstream's side, once it answered `101`.
    pub ws_upstream: Option<hyper::upgrade::OnUpgrade>,
    /// The client asked for WebSocket over HTTP/2 (extended CONNECT).
    pub ws_h2: bool,
}

impl HttpExchange {
    pub fn new(
        rt: Arc<L7>,
        (peer, peer_ip): (SocketAddr, hyper::header::HeaderValue),
        tls: bool,
        req: request::Parts,
        body: Body,
    ) -> Self {
        Self {
            rt,
            peer,
            peer_ip,
            tls,
            req,
            body: Some(body),
            resp: None,
            req_buf: None,
            res_buf: None,
            ws_client: None,
            ws_upstream: None,
            ws_h2: false,
        }
    }
}

/// `req.body` / `req.body_hex` (and `res.`) from a buffer; `None` (the placeholder stays) when
/// the body was refused.
fn body_key(buf: Option<&Result<Buffered, Refused>>, hex_form: bool) -> Option<String> {
    let bytes = match buf {
        Some(Ok(b)) => &b.bytes[..],
        Some(Err(_)) => return None,
        None => &[][..],
    };
    Some(if hex_form {
        hex::encode(bytes)
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    })
}

/// A value a header map reads as text (`HeaderValue::to_str`): visible ASCII and tabs.
fn visible(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

/// `<prefix><name>`: the first value of that header (empty when absent or not text);
/// `<prefix>s`: every header as a JSON object, repeated ones joined by `, `.
fn header_key(headers: &HeaderMap, key: &str, prefix: &str) -> Option<String> {
    if let Some(name) = key.strip_prefix(prefix) {
        return Some(
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        );
    }
    if key.strip_prefix(prefix.trim_end_matches('.')) == Some("s") {
        let mut map = serde_json::Map::new();
        for name in headers.keys() {
            let joined = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            map.insert(name.as_str().to_string(), joined.into());
        }
        return Some(Value::Object(map).to_string());
    }
    None
}

impl Exchange for HttpExchange {
    fn lookup(&self, key: &str) -> Option<String> {
        match key {
            "req.body" => return body_key(self.req_buf.as_ref(), false),
            "req.body_hex" => return body_key(self.req_buf.as_ref(), true),
            "res.body" => return body_key(self.res_buf.as_ref(), false),
            "res.body_hex" => return body_key(self.res_buf.as_ref(), true),
            _ => {}
        }
        if key.starts_with("req.header") {
            return header_key(&self.req.headers, key, "req.header.");
        }
        if key.starts_with("res.header") {
            let Some((_, h, _)) = self.resp.as_ref() else {
                return header_key(&HeaderMap::new(), key, "res.header.");
            };
            if let (Headers::Received(_), Some(name)) = (h, key.strip_prefix("res.header.")) {
                // Read off the received fields, as the map would answer.
                let text = h.get(name).filter(|v| visible(v)).unwrap_or_default();
                return Some(String::from_utf8_lossy(text).into_owned());
            }
            return header_key(&h.to_map(), key, "res.header.");
        }
        None
    }

    fn buffer<'a>(
        &'a mut self,
        bodies: u8,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let (max, budget) = (self.rt.settings.l7_max_body, self.rt.memory.clone());
            if bodies & REQ_BODY != 0 && self.req_buf.is_none() {
                let body = self.body.take().unwrap_or_else(super::body::empty);
                let (body, buf) = buffer(body, declared(&self.req.headers), max, &budget).await;
                self.body = Some(body);
                self.req_buf = Some(buf);
            }
            if bodies & RES_BODY != 0 && self.res_buf.is_none() {
                if let Some((status, headers, body)) = self.resp.take() {
                    let (body, buf) = buffer(body, headers.declared(), max, &budget).await;
                    self.resp = Some((status, headers, body));
                    self.res_buf = Some(buf);
                }
            }
        })
    }

    fn drive<'a>(
        &'a mut self,
        kind: Builtin,
        inputs: Inputs<'a>,
        kv: &'a mut Kv,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Driven, DriverError>> + Send + 'a>>
    {
        match kind {
            Builtin::Upstream => {
                crate::boxed::pin_in_place(|| super::upstream::fetch(self, inputs, kv))
            }
            Builtin::Static => Box::pin(super::static_files::serve(self, inputs, kv)),
            Builtin::Cgi => Box::pin(super::cgi::run(self, inputs, kv)),
            other => {
                Box::pin(
                    async move { Err(format!("{other:?} is not available in this build").into()) },
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys() {
        let mut h = HeaderMap::new();
        h.insert("user-agent", "probe".parse().expect("value"));
        h.append("accept", "a".parse().expect("value"));
        h.append("accept", "b".parse().expect("value"));
        let get = |k: &str| header_key(&h, k, "req.header.");
        assert_eq!(get("req.header.User-Agent").as_deref(), Some("probe"));
        assert_eq!(get("req.header.missing").as_deref(), Some(""));
        assert_eq!(
            get("req.headers").as_deref(),
            Some(r#"{"user-agent":"probe","accept":"a, b"}"#)
        );
        assert_eq!(get("req.path"), None);
    }
}
