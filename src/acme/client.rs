//! The HTTP client instant-acme talks to the CA through: hyper's HTTP/1.1 client connection over
//! tokio-rustls, one connection per request (an order is a dozen requests a season), trusting
//! the system roots plus the order's `ca_bundle`. It remembers the CA's `Retry-After` so the
//! worker can honour a rate limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The largest CA answer read (a certificate chain is a few KiB).
const MAX_BODY: usize = 1 << 20;

/// Why a request to the CA failed below the ACME protocol.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("bad CA URL `{0}`")]
    Url(String),
    #[error("cannot reach the CA at {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS to the CA at {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("HTTP to the CA: {0}")]
    Http(#[from] hyper::Error),
    #[error("the CA's answer is over {MAX_BODY} bytes")]
    TooLarge,
    #[error("the CA did not answer within {0:?}")]
    Timeout(Duration),
    #[error("CA trust: {0}")]
    Trust(String),
}

#[derive(Clone)]
pub struct CaClient {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
    /// The last `Retry-After` the CA sent with an error status.
    retry_after: Arc<Mutex<Option<Duration>>>,
}

impl CaClient {
    /// Trusts the system roots and every certificate of `ca_bundle`.
    pub fn new(ca_bundle: Option<&std::path::Path>, timeout: Duration) -> Result<Self, CaError> {
        let mut extra = Vec::new();
        if let Some(p) = ca_bundle {
            extra = CertificateDer::pem_file_iter(p)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| CaError::Trust(format!("{}: {e}", p.display())))?;
            if extra.is_empty() {
                return Err(CaError::Trust(format!("{}: no certificate", p.display())));
            }
        }
        let mut cfg = crate::certs::client::config(false, &extra)
            .map_err(|e| CaError::Trust(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            timeout,
            retry_after: Arc::default(),
        })
    }

    /// Takes the `Retry-After` of the last refused request, if the CA sent one.
    pub fn take_retry_after(&self) -> Option<Duration> {
        self.retry_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// One request, its whole answer (bounded by [`MAX_BODY`]) and the time budget.
    async fn fetch(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Result<(hyper::http::response::Parts, Bytes), CaError> {
        tokio::time::timeout(self.timeout, self.fetch_unbounded(req))
            .await
            .map_err(|_| CaError::Timeout(self.timeout))?
    }

    /// `method url` with an optional bearer token and no body (LazyCert's API): (status, body).
    pub async fn call(
        &self,
        method: hyper::Method,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<(u16, Bytes), CaError> {
        let mut b = Request::builder().method(method).uri(url);
        if let Some(t) = bearer {
            b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = b
            .body(BodyWrapper::default())
            .map_err(|_| CaError::Url(url.to_string()))?;
        let (parts, body) = self.fetch(req).await?;
        Ok((parts.status.as_u16(), body))
    }

    async fn fetch_unbounded(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Result<(hyper::http::response::Parts, Bytes), CaError> {
        let uri = req.uri().clone();
        let host = uri
            .host()
            .ok_or_else(|| CaError::Url(uri.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(CaError::Url(uri.to_string())),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| CaError::Connect(format!("{host}:{port}"), e))?;
        let _ = tcp.set_nodelay(true);
        let (mut parts, body) = req.into_parts();
        let authority = uri.authority().map(|a| a.as_str().to_string());
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| CaError::Url(uri.to_string()))?;
        if let Some(a) = authority.and_then(|a| a.parse().ok()) {
            parts.headers.insert(hyper::header::HOST, a);
        }
        let req = Request::from_parts(parts, body);
        let rsp = if https {
            let name =
                ServerName::try_from(host.clone()).map_err(|_| CaError::Url(uri.to_string()))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| CaError::Tls(format!("{host}:{port}"), e))?;
            exchange(TokioIo::new(tls), req).await?
        } else {
            exchange(TokioIo::new(tcp), req).await?
        };
        let (parts, body) = rsp.into_parts();
        if parts.status.is_client_error() || parts.status.is_server_error() {
            let wait = parts
                .headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(retry_after);
            if wait.is_some() {
                *self.retry_after.lock().unwrap_or_else(|e| e.into_inner()) = wait;
            }
        }
        let body = http_body_util::Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|_| CaError::TooLarge)?
            .to_bytes();
        Ok((parts, body))
    }
}

async fn exchange<IO>(
    io: IO,
    req: Request<BodyWrapper<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, CaError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send.send_request(req).await?)
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    httpdate::parse_http_date(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            match this.fetch(req).await {
                Ok((parts, body)) => Ok(BytesResponse {
                    parts,
                    body: Box::new(body),
                }),
                Err(e) => Err(instant_acme::Error::Other(Box::new(e))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        let d = retry_after(&httpdate::fmt_http_date(later)).expect("date");
        assert!(d > Duration::from_secs(3500) && d <= Duration::from_secs(3600));
        assert_eq!(retry_after("soon"), None);
    }
}
