//! `internal.driver.upstream`: forwards the request to an HTTP upstream over the pooled
//! clients and keeps the response (status in `res.status`, headers and streamed body in the
//! exchange) for the terminator. Unlike 0.9.2 it strips hop-by-hop headers both ways and
//! tells the upstream who the client was (`X-Forwarded-For`, `-Proto`, `-Host`).

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, HOST};
use hyper::{Method, Request, StatusCode};

use super::body::{self, Body, BoxError};
use super::exchange::HttpExchange;
use super::forward;
use super::inputs::flag;
use super::reply::Headers;
use crate::flow::exec::{Driven, DriverError, Inputs};
use crate::flow::kv::Kv;
use crate::runtime::Runtime;
use crate::upstream::error::Kind as ErrorKind;
use crate::upstream::UpstreamError;

/// "100" to "999", three digits each: `res.status` of any code as a `&'static str`, set
/// without a copy per request (`StatusCode::as_str` lends its text only for the code's life).
const CODES: &str = {
    const DIGITS: [u8; 2700] = {
        let mut b = [0u8; 2700];
        let mut i = 0;
        while i < 900 {
            let n = i + 100;
            b[i * 3] = b'0' + (n / 100) as u8;
            b[i * 3 + 1] = b'0' + (n / 10 % 10) as u8;
            b[i * 3 + 2] = b'0' + (n % 10) as u8;
            i += 1;
        }
        b
    };
    match std::str::from_utf8(&DIGITS) {
        Ok(s) => s,
        Err(_) => panic!("ASCII digits"),
    }
};

/// `res.status` for `status` (always 100-999).
fn status_text(status: StatusCode) -> &'static str {
    let at = usize::from(status.as_u16().saturating_sub(100)) * 3;
    CODES.get(at..at + 3).unwrap_or("")
}

/// The `failure` branch, with what went wrong for the flow: `error` (text), `error_kind`
/// (request, resolve, connect, handshake, protocol, internal) and `retryable`.
fn failure(e: &UpstreamError) -> Result<Driven, DriverError> {
    Ok((
        "failure".into(),
        vec![
            ("error".into(), e.to_string()),
            ("error_kind".into(), e.kind.as_str().into()),
            ("retryable".into(), e.retryable().to_string()),
        ],
    ))
}

thread_local! {
    /// `vane_upstream_requests_total` handles by upstream authority (ok, error), so a request
    /// does not build label strings and search the registry.
    static OUTCOMES: std::cell::RefCell<std::collections::HashMap<String, [metrics::Counter; 2]>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn outcome_counter(authority: &str, ok: bool) -> metrics::Counter {
    OUTCOMES.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(c) = m.get(authority) {
            return c[usize::from(!ok)].clone();
        }
        // Authorities can come from client input (`url_prefix: "http://{{req.host}}"`): past the
        // label cap they share the `other` series, which is cached once.
        let target = crate::labels::UPSTREAM_TARGET.admit(authority);
        if let Some(c) = m.get(target) {
            return c[usize::from(!ok)].clone();
        }
        let pair = [true, false].map(|ok| {
            metrics::counter!("vane_upstream_requests_total", "target" => target.to_string(), "outcome" => if ok { "ok" } else { "error" })
        });
        let c = pair[usize::from(!ok)].clone();
        // Bounded as the label is: at most the cap's values plus `other`.
        m.insert(target.to_string(), pair);
        c
    })
}

pub fn wants_websocket(h: &HeaderMap) -> bool {
    use super::h1::head::has_token;
    has_token(h, hyper::header::UPGRADE, "websocket") && has_token(h, CONNECTION, "upgrade")
}

pub async fn fetch(
    x: &mut HttpExchange,
    inputs: Inputs<'_>,
    kv: &mut Kv,
) -> Result<Driven, DriverError> {
    let s = |k: &str| inputs.str(k);
    let Some(prefix) = s("url_prefix") else {
        return Err(DriverError::param("url_prefix", "missing"));
    };
    let ws = x.ws_h2 || wants_websocket(&x.req.headers);
    if ws && !flag(inputs.get("websocket")) {
        kv.set("res.status", "405");
        kv.set(
            "res.body",
            "Method Not Allowed: WebSocket upgrade is disabled",
        );
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        x.resp = Some((StatusCode::METHOD_NOT_ALLOWED, h.into(), body::empty()));
        return Ok((
            "success".into(),
            vec![("error".into(), "WebSocket not allowed".into())],
        ));
    }
    let (mut h2c, mut h3) = (false, false);
    match s("version").map(str::to_ascii_lowercase).as_deref() {
        None | Some("auto" | "h1" | "h1.1" | "h2") => {}
        Some("h2c") => h2c = true,
        Some("h3") => h3 = true,
        Some(other) => tracing::warn!("upstream version `{other}` is unknown; using auto"),
    }
    let uri = match super::target::uri(prefix, s("path"), s("query"), kv, &x.req.uri) {
        Ok(uri) => uri,
        Err(e) => return failure(&UpstreamError::new(ErrorKind::Request, e.to_string())),
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return failure(&UpstreamError::new(
            ErrorKind::Request,
            format!("invalid upstream URL `{uri}`"),
        ));
    }
    let method = s("method")
        .and_then(|m| Method::from_bytes(m.trim().as_bytes()).ok())
        .unwrap_or_else(|| {
            if ws {
                Method::GET
            } else {
                x.req.method.clone()
            }
        });
    let body = x.body.take().unwrap_or_else(body::empty);
    let client = forward::Client {
        headers: &x.req.headers,
        authority: x.req.uri.authority().map(|a| a.as_str()),
        ip: &x.peer_ip,
        tls: x.tls,
    };
    let out = forward::Outbound::new(method, uri, client, !ws);
    let skip = flag(inputs.get("skip_verify"));
    // A clone of the URL shares its bytes: the metric's label without a copy.
    let target_uri = out.uri.clone();
    let authority = target_uri.authority().map_or("", |a| a.as_str());
    let plain = out.uri.scheme_str() == Some("http");
    // The paths other than vane's own HTTP/1.1 client are boxed: their futures are large, and
    // this one is moved into a box for every request (the flow boxes each driver).
    // hyper's answers as a map, hop-by-hop fields dropped (a WebSocket 101 keeps its
    // upgrade fields for the terminator's answer).
    let mapped = |(status, mut h, body): (StatusCode, HeaderMap, Body)| {
        if let Some(te) = h.get(hyper::header::TRANSFER_ENCODING) {
            // hyper decodes `chunked` and passes any other coding by, which the client would
            // then get as plain bytes: refused, as vane's own client refuses it.
            if !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")
                || h.get_all(hyper::header::TRANSFER_ENCODING).iter().count() > 1
            {
                return Err(UpstreamError::new(
                    ErrorKind::Protocol,
                    "malformed response: a transfer coding other than chunked",
                ));
            }
            // The coding overrides a length beside it (RFC 9112 §6.3).
            h.remove(hyper::header::CONTENT_LENGTH);
        }
        if !ws {
            forward::strip_hop_by_hop(&mut h);
        }
        Ok((status, Headers::Map(h), body))
    };
    let sent = if ws {
        let mut req = out.request(body);
        if x.ws_h2 {
            h2_websocket_fields(req.headers_mut());
        }
        Box::pin(websocket(x, req, skip)).await.and_then(mapped)
    } else if h3 {
        let sent = Box::pin(super::h3_client::send(&x.rt, out.request(body), skip)).await;
        sent.and_then(mapped)
    } else if plain && !h2c {
        // Written straight from the client's fields by vane's HTTP/1.1 client, which
        // leaves the hop-by-hop fields of the answer out itself.
        super::h1_pool::send(&x.rt.rt, &out, body).await
    } else {
        use super::client::Kind;
        let kind = match (h2c && plain, skip) {
            (true, _) => Kind::H2c,
            (false, true) => Kind::SkipVerify,
            (false, false) => Kind::Verified,
        };
        crate::boxed::pin_in_place(|| pooled(&x.rt.rt, out.request(body), kind))
            .await
            .and_then(mapped)
    };
    match sent {
        Ok((status, headers, body)) => {
            outcome_counter(authority, true).increment(1);
            kv.set_static("res.status", status_text(status));
            x.resp = Some((status, headers, body));
            Ok(("success".into(), Vec::new()))
        }
        Err(e) => {
            outcome_counter(authority, false).increment(1);
            tracing::debug!("upstream {target_uri}: {e} ({})", e.kind.as_str());
            failure(&e)
        }
    }
}

/// What an upstream answered: status, headers and the streamed body.
pub type Answer = Result<(StatusCode, HeaderMap, Body), UpstreamError>;

/// An HTTP/2 WebSocket (RFC 8441) goes upstream as an HTTP/1.1 upgrade, which needs the
/// handshake fields HTTP/2 leaves out.
fn h2_websocket_fields(headers: &mut HeaderMap) {
    use base64::Engine;
    let key: [u8; 16] = rand::random();
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    headers.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        headers.insert("sec-websocket-key", v);
    }
}

/// The request over this thread's pooled hyper client of `kind` (TLS upstreams, h2c).
async fn pooled(rt: &Arc<Runtime>, req: Request<Body>, kind: super::client::Kind) -> Answer {
    let client = super::client::for_this_thread(rt, kind)
        .map_err(|e| UpstreamError::new(ErrorKind::Internal, e))?;
    match client.request(req).await {
        Ok(resp) => {
            let (parts, incoming) = resp.into_parts();
            let body = incoming.map_err(|e| Box::new(e) as BoxError).boxed();
            Ok((parts.status, parts.headers, body))
        }
        Err(e) => {
            let kind = if e.is_connect() {
                ErrorKind::of_chain(&e, ErrorKind::Connect)
            } else {
                ErrorKind::Protocol
            };
            Err(UpstreamError::chain(kind, &e))
        }
    }
}

/// A WebSocket upgrade: sent over a fresh HTTP/1.1 connection (never HTTP/2, never pooled).
/// On `101` the upstream's side of the upgrade is kept for the terminator, which completes
/// the tunnel; any other answer is an ordinary response.
async fn websocket(x: &mut HttpExchange, mut req: Request<Body>, skip: bool) -> Answer {
    let uri = req.uri().clone();
    let authority = uri.authority().map_or(String::new(), |a| a.to_string());
    let connector = match x.rt.ws_connectors[usize::from(skip)].get() {
        Some(c) => c.clone(),
        None => {
            let c = super::client::Connector::new(x.rt.rt.clone(), skip, true)
                .map_err(|e| UpstreamError::new(ErrorKind::Internal, e))?;
            x.rt.ws_connectors[usize::from(skip)]
                .get_or_init(|| c)
                .clone()
        }
    };
    let stream = connector.open(&uri).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(stream)
        .await
        .map_err(|e| UpstreamError::chain(ErrorKind::Protocol, &e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    if let Ok(host) = HeaderValue::from_str(&authority) {
        req.headers_mut().insert(HOST, host);
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| UpstreamError::new(ErrorKind::Request, e))?;
    let mut resp = send
        .send_request(req)
        .await
        .map_err(|e| UpstreamError::chain(ErrorKind::Protocol, &e))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        x.ws_upstream = Some(hyper::upgrade::on(&mut resp));
    }
    let (parts, incoming) = resp.into_parts();
    let body = incoming.map_err(|e| Box::new(e) as BoxError).boxed();
    Ok((parts.status, parts.headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_size<'a, A: 'a, B, C: 'a, F>(_: fn(&'a mut A, B, &'a mut C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The driver's state is moved into a box per request: connecting (name lookup
    /// included) and sending a request body are boxed where they start.
    #[test]
    fn the_upstream_driver_state_stays_small() {
        let size = state_size(fetch);
        eprintln!("upstream driver state: {size} bytes");
        assert!(size <= 1280, "{size} bytes");
    }

    #[test]
    fn status_texts_are_the_codes() {
        for code in 100..=999u16 {
            let status = StatusCode::from_u16(code).expect("code");
            assert_eq!(status_text(status), status.as_str());
        }
    }
}
