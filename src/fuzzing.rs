//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus regression test for what
//! the L4+ parsers (`l4p::fuzzing`) do not cover: templates, the config formats and the flow
//! and legacy documents behind them, the plaintext HTTP head reader and the external-plugin
//! reply decoder. Each drives the code the way the gateway does and checks the invariants it
//! relies on; a panic is a finding.

use std::borrow::Cow;

use crate::config::error::Problems;
use crate::config::format::{self, Format};
use crate::config::legacy;
use crate::config::plugins::ExternalPlugins;
use crate::flow::catalogue::Layer;
use crate::flow::template::{Limits, Template};
use crate::flow::validate::{self, Context};

/// Rendered templates are cut at this size.
const RENDER_MAX: usize = 4096;

/// A template from a config file, rendered against a lookup that answers every key with
/// something as long as the key (and some keys not at all).
pub fn template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(t) = Template::parse(&text, Limits::default()) else {
        return;
    };
    let lookup = |k: &str| -> Option<Cow<'static, str>> {
        (!k.starts_with('x')).then(|| Cow::Owned(k.repeat(3)))
    };
    let out = t.render(&lookup, RENDER_MAX);
    assert!(
        out.len() <= RENDER_MAX,
        "rendered past the cap: {}",
        out.len()
    );
    if !t.is_dynamic() {
        assert!(out.len() <= text.len(), "a literal template grew");
    }
}

/// A config document: the first byte picks the format, the rest is the file's text. Parsed,
/// then compiled as a listener flow, an application flow and legacy rules.
pub fn config(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let fmt = match pick % 4 {
        0 => Format::Toml,
        1 => Format::Yaml,
        2 => Format::Json,
        _ => Format::Ron,
    };
    let text = String::from_utf8_lossy(rest);
    let Ok(doc) = format::parse(fmt, &text) else {
        return;
    };
    let plugins = ExternalPlugins::new();
    for (root, layer, protocol) in [
        ("connection", Layer::L4, "tcp"),
        ("connection", Layer::L4Plus, "tls"),
        ("pipeline", Layer::L7, "httpx"),
    ] {
        let cx = Context {
            layer,
            protocol,
            plugins: &plugins,
            limits: Limits::default(),
        };
        let mut pr = Problems::for_file("fuzz.yaml");
        let flow = validate::compile(&doc, root, &cx, &mut pr);
        assert!(
            flow.is_none() || !pr.has_errors(),
            "a flow with errors was compiled"
        );
    }
    let mut pr = Problems::for_file("fuzz.yaml");
    let rules = legacy::parse(&doc, &mut pr);
    assert!(
        rules.is_none() || !pr.has_errors(),
        "legacy rules with errors were accepted"
    );
}

/// The plaintext HTTP head reader on peeked bytes: what it reports is taken from the input.
pub fn http_head(data: &[u8]) {
    let head = crate::l4p::http_head::parse(data);
    for field in [&head.method, &head.path, &head.host].into_iter().flatten() {
        assert!(
            field.is_empty() || data.windows(field.len()).any(|w| w == field.as_bytes()),
            "`{field}` is not in the input"
        );
    }
}

/// An external plugin's raw HTTP reply, and the same bytes as a command plugin's output.
pub fn plugin_reply(data: &[u8]) {
    if let Ok(v) = crate::plugins::external::decode_reply(data) {
        assert!(
            v.branch.len() <= data.len(),
            "a branch longer than the reply"
        );
    }
    let _ = serde_json::from_slice::<crate::plugins::external::Verdict>(data);
}

/// A client's bytes on an HTTP/1.1 connection: the head parsed as the server does, then the
/// body it declares decoded out of the rest, read in pieces whose size the first byte picks.
/// What the decoder hands on never exceeds what came in, nor a declared length.
pub fn h1_request(data: &[u8]) {
    use crate::l7::h1::body::{Feed, Framing, Step};
    use crate::l7::h1::head::{self, Parsed};
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(pick % 64) + 1;
    let mut buf = bytes::BytesMut::new();
    let mut fed = 0;
    let h = loop {
        match head::parse(&mut buf, crate::l7::h1::MAX_HEAD) {
            Ok(Parsed::Head(h)) => break h,
            Ok(Parsed::Partial) if fed < rest.len() => {
                let end = (fed + step * 64).min(rest.len());
                buf.extend_from_slice(&rest[fed..end]);
                fed = end;
            }
            _ => return,
        }
    };
    let Some(framing) = h.body else { return };
    let (mut feed, _body) = Feed::new(framing);
    let mut out = 0usize;
    loop {
        match feed.decode(&mut buf) {
            Ok(Step::Data(d)) => out += d.len(),
            Ok(Step::Last(d)) => {
                out += d.len();
                break;
            }
            Ok(Step::More) if fed < rest.len() => {
                let end = (fed + step).min(rest.len());
                buf.extend_from_slice(&rest[fed..end]);
                fed = end;
            }
            _ => break,
        }
    }
    assert!(out <= rest.len(), "decoded more than came in");
    if let Framing::Length(n) = framing {
        assert!(out as u64 <= n, "decoded past Content-Length");
    }
}

/// Bytes as what follows an HTTP/2 client's preface: frames read and checked as the server
/// reads them, each header block decoded (the connection's HPACK table carried from one to
/// the next) and made a request head. Invariants: no panic, and the table never grows past
/// the size the server announces. Returns how many request heads were whole.
pub fn h2_frames(data: &[u8]) -> usize {
    use bytes::Buf;

    use crate::l7::h2::frame::{Frame, Head, HEAD_LEN};
    use crate::l7::h2::hpack::{Decoder, HpackError, Scratch};
    use crate::l7::h2::request::Builder;
    const TABLE: usize = 4096;
    let mut rest = bytes::Bytes::copy_from_slice(data);
    let mut decoder = Decoder::new(TABLE);
    let mut scratch = Scratch::default();
    let mut heads = 0;
    // A block is decoded whole, HEADERS and CONTINUATIONs joined, as the server does.
    let mut block = Vec::new();
    while rest.len() >= HEAD_LEN {
        let Ok(raw) = <[u8; HEAD_LEN]>::try_from(&rest[..HEAD_LEN]) else {
            return heads;
        };
        let head = Head::parse(&raw);
        rest.advance(HEAD_LEN);
        let payload = rest.split_to((head.len as usize).min(rest.len()));
        let (fragment, end) = match Frame::parse(head, payload) {
            Ok(Frame::Headers {
                fragment,
                end_headers,
                ..
            }) => {
                block.clear();
                (fragment, end_headers)
            }
            Ok(Frame::Continuation {
                fragment,
                end_headers,
                ..
            }) => (fragment, end_headers),
            _ => continue,
        };
        block.extend_from_slice(&fragment);
        if !end {
            continue;
        }
        let mut b = Builder::default();
        let decoded = decoder.decode(&block, &mut scratch, |f| {
            b.field(f);
            Ok::<_, HpackError>(())
        });
        assert!(decoder.table_size() <= TABLE, "HPACK table past its limit");
        if decoded.is_err() {
            return heads;
        }
        heads += usize::from(b.finish().is_ok());
    }
    heads
}
