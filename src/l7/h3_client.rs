//! HTTP/3 upstreams (`version: h3`): one QUIC connection per (host, port, skip_verify) and
//! data-plane thread, reused by every request; the request body is uploaded while the
//! response downloads (full duplex).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::{Request, Uri};

use super::body::Body;
use super::upstream::Answer;
use crate::runtime::Runtime;
use crate::upstream::error::Kind;
use crate::upstream::UpstreamError;

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

thread_local! {
    static ENDPOINT: RefCell<Option<quinn::Endpoint>> = const { RefCell::new(None) };
    static POOL: RefCell<HashMap<(String, u16, bool), Sender>> = RefCell::new(HashMap::new());
}

fn client_config(skip_verify: bool) -> Result<quinn::ClientConfig, UpstreamError> {
    let internal = |e: &dyn std::fmt::Display| UpstreamError::new(Kind::Internal, e);
    let mut tls = super::client::tls_config(skip_verify).map_err(|e| internal(&e))?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| internal(&e))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(qc));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

fn endpoint() -> Result<quinn::Endpoint, UpstreamError> {
    ENDPOINT.with(|e| {
        if let Some(ep) = e.borrow().as_ref() {
            return Ok(ep.clone());
        }
        let any6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
        let ep = quinn::Endpoint::client(any6)
            .or_else(|_| quinn::Endpoint::client(([0, 0, 0, 0], 0).into()))
            .map_err(|e| UpstreamError::new(Kind::Internal, e))?;
        *e.borrow_mut() = Some(ep.clone());
        Ok(ep)
    })
}

async fn connect(rt: &Runtime, host: &str, port: u16, skip: bool) -> Result<Sender, UpstreamError> {
    let ip = rt
        .upstreams
        .dns
        .lookup(host)
        .await
        .into_iter()
        .next()
        .ok_or_else(|| UpstreamError::new(Kind::Resolve, format!("`{host}` did not resolve")))?;
    let ep = endpoint()?;
    let connecting = ep
        .connect_with(client_config(skip)?, (ip, port).into(), host)
        .map_err(|e| UpstreamError::new(Kind::Request, e))?;
    let conn = tokio::time::timeout(rt.settings.connect_timeout, connecting)
        .await
        .map_err(|_| UpstreamError::new(Kind::Connect, "QUIC handshake timed out"))?
        .map_err(|e| UpstreamError::new(Kind::Handshake, e))?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| UpstreamError::new(Kind::Protocol, e))?;
    let key = (host.to_string(), port, skip);
    tokio::spawn(async move {
        let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        tracing::debug!("HTTP/3 upstream connection closed: {e}");
        POOL.with(|p| p.borrow_mut().remove(&key));
    });
    Ok(send)
}

/// Pools the connection to `key`. The pool is keyed by host and port, which a flow can take
/// from client input, so it holds at most `max` connections per thread: a new one pushes out
/// another (which closes once its last request is done).
fn pool_insert(key: (String, u16, bool), sender: Sender, max: usize) {
    POOL.with(|p| {
        if bounded_insert(&mut p.borrow_mut(), key, sender, max) {
            metrics::counter!("vane_h3_upstream_pool_evictions_total").increment(1);
        }
    });
}

/// Inserts into a map of at most `max` entries, pushing out another one when it is full;
/// true when it did.
fn bounded_insert<K: Eq + std::hash::Hash + Clone, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    max: usize,
) -> bool {
    let mut evicted = false;
    if map.len() >= max && !map.contains_key(&key) {
        if let Some(victim) = map.keys().next().cloned() {
            map.remove(&victim);
            evicted = true;
        }
    }
    map.insert(key, value);
    evicted
}

/// Sends `req` over HTTP/3; the answer's status, headers and streamed body.
pub async fn send(rt: &Runtime, req: Request<Body>, skip: bool) -> Answer {
    let uri: Uri = req.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(UpstreamError::new(
            Kind::Request,
            "HTTP/3 needs an https:// upstream",
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| UpstreamError::new(Kind::Request, "URL without a host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let key = (host.clone(), port, skip);
    let pooled = POOL.with(|p| p.borrow().get(&key).cloned());
    let mut sender = match pooled {
        Some(s) => s,
        None => {
            let s = connect(rt, &host, port, skip).await?;
            pool_insert(key.clone(), s.clone(), rt.settings.upstream_h3_pool_max);
            s
        }
    };
    let (parts, mut body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    let stream = match sender.send_request(head).await {
        Ok(s) => s,
        Err(e) => {
            POOL.with(|p| p.borrow_mut().remove(&key));
            return Err(UpstreamError::new(Kind::Protocol, e));
        }
    };
    let (mut up, mut down) = stream.split();
    // The upload runs beside the download.
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame.map(Frame::into_data) {
                Ok(Ok(data)) => {
                    if up.send_data(data).await.is_err() {
                        return;
                    }
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    up.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                    return;
                }
            }
        }
        let _ = up.finish().await;
    });
    let resp = down
        .recv_response()
        .await
        .map_err(|e| UpstreamError::new(Kind::Protocol, e))?;
    let (parts, ()) = resp.into_parts();
    Ok((parts.status, parts.headers, super::h3::H3Body(down).boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_map_keeps_its_bound_under_a_hundred_thousand_hosts() {
        let mut m = HashMap::new();
        let mut evicted = 0;
        for i in 0..100_000 {
            evicted += usize::from(bounded_insert(
                &mut m,
                (format!("h{i}.example"), 443, false),
                i,
                256,
            ));
        }
        assert_eq!(m.len(), 256);
        assert_eq!(evicted, 100_000 - 256);
        assert!(
            m.contains_key(&("h99999.example".to_string(), 443, false)),
            "the newest is kept"
        );
        assert!(
            !bounded_insert(&mut m, ("h99999.example".to_string(), 443, false), 0, 256),
            "a known key replaces, evicts nothing"
        );
    }
}
