//! Why a request to an upstream failed, as data: where it failed (the kind) and whether
//! sending it again may help. Flows see both (`error_kind`, `retryable` beside `error`), so
//! a fallback branch can tell "the upstream is down" from "the request is wrong".

use std::io;

/// The stage at which an upstream request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request cannot be sent as configured (bad URL, unsupported scheme): the flow's
    /// fault, not the upstream's; retrying cannot help.
    Request,
    /// The upstream's name did not resolve.
    Resolve,
    /// No connection: refused, unreachable or timed out.
    Connect,
    /// The TLS or QUIC handshake failed.
    Handshake,
    /// The upstream broke the protocol or closed mid-exchange.
    Protocol,
    /// Something on our side (client configuration, local endpoint).
    Internal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Resolve => "resolve",
            Kind::Connect => "connect",
            Kind::Handshake => "handshake",
            Kind::Protocol => "protocol",
            Kind::Internal => "internal",
        }
    }
}

/// An upstream request that failed: its kind and what went wrong, for logs and the flow.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct UpstreamError {
    pub kind: Kind,
    msg: String,
}

impl UpstreamError {
    pub fn new(kind: Kind, msg: impl std::fmt::Display) -> Self {
        Self {
            kind,
            msg: msg.to_string(),
        }
    }

    /// True when the same request may succeed if sent again (now, or to another target):
    /// nothing reached the upstream's application yet.
    pub fn retryable(&self) -> bool {
        matches!(self.kind, Kind::Resolve | Kind::Connect | Kind::Handshake)
    }

    /// A failure of `err` and everything it was caused by, in one line (the useful part of
    /// a client error often sits in its source chain).
    pub fn chain(kind: Kind, err: &(dyn std::error::Error + 'static)) -> Self {
        let mut msg = err.to_string();
        let mut src = err.source();
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        Self::new(kind, msg)
    }
}

impl Kind {
    /// The stage an I/O error of opening a connection stands for (the connector reports a
    /// name that did not resolve as `NotFound`, a bad URL as `InvalidInput`, and rustls
    /// reports handshake failures as `InvalidData`).
    pub fn of_io(kind: io::ErrorKind) -> Kind {
        match kind {
            io::ErrorKind::NotFound => Kind::Resolve,
            io::ErrorKind::InvalidInput => Kind::Request,
            io::ErrorKind::InvalidData => Kind::Handshake,
            _ => Kind::Connect,
        }
    }

    /// The stage of a client error: the first I/O error in its source chain, else
    /// `otherwise`.
    pub fn of_chain(err: &(dyn std::error::Error + 'static), otherwise: Kind) -> Kind {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                return Kind::of_io(io.kind());
            }
            src = s.source();
        }
        otherwise
    }
}

impl From<io::Error> for UpstreamError {
    fn from(e: io::Error) -> Self {
        Self::new(Kind::of_io(e.kind()), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_the_request_left_are_retryable() {
        let refused = UpstreamError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.kind, Kind::Connect);
        assert!(refused.retryable());
        let bad = UpstreamError::new(Kind::Request, "HTTP/3 needs an https:// upstream");
        assert!(!bad.retryable());
        assert!(!UpstreamError::new(Kind::Protocol, "reset").retryable());
        assert_eq!(bad.to_string(), "HTTP/3 needs an https:// upstream");
    }

    #[test]
    fn the_chain_keeps_the_cause() {
        let inner = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let outer = io::Error::other(inner);
        let e = UpstreamError::chain(Kind::Connect, &outer);
        assert!(e.to_string().contains("refused"), "{e}");
    }
}
