//! The fuzz targets' seed corpora (`fuzz/corpus/*`) replayed as plain regression tests, so
//! every input that ever mattered to a parser keeps being checked by `cargo test`.
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` regenerates the seeds from real
//! clients (rustls, quinn).

mod common;

use std::path::{Path, PathBuf};

use vane::fuzzing;
use vane::l4p::clienthello::{self, Assembled};
use vane::l4p::fuzzing as l4p_fuzzing;
use vane::l4p::proxy_protocol::{self, Parsed};
use vane::l4p::quic::inspect::{Inspector, Limits};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).expect("read seed")))
        .collect();
    out.sort();
    out
}

#[test]
fn client_hello_corpus() {
    let seeds = corpus("client_hello");
    assert!(seeds.len() >= 4, "seeds present");
    let mut with_sni = 0;
    for (path, data) in &seeds {
        l4p_fuzzing::client_hello(data);
        if let Assembled::Complete { message, .. } = clienthello::assemble(data) {
            if clienthello::parse(&message)
                .ok()
                .and_then(|c| c.sni)
                .is_some()
            {
                with_sni += 1;
            }
        }
        let _ = path;
    }
    assert!(
        with_sni >= 3,
        "real ClientHellos (also split over records) still parse with their SNI"
    );
}

#[test]
fn quic_initial_corpus() {
    let seeds = corpus("quic_initial");
    assert!(seeds.len() >= 2);
    let mut complete = 0;
    for (_, data) in &seeds {
        l4p_fuzzing::quic_initial(data);
        let (a, b) = data.split_at(data.len() / 2);
        if let Ok(mut i) = Inspector::new(a, Limits::default()) {
            if matches!(i.push(a), Ok(Some(_)))
                || matches!(i.push(b), Ok(Some(ref f)) if f.hello.sni.is_some())
            {
                complete += 1;
            }
        }
    }
    assert!(
        complete >= 1,
        "a real two-datagram quinn ClientHello is reassembled"
    );
}

#[test]
fn proxy_header_corpus() {
    let seeds = corpus("proxy_header");
    assert!(seeds.len() >= 4);
    let headers = seeds.iter().filter(|(_, d)| {
        l4p_fuzzing::proxy_header(d);
        matches!(proxy_protocol::parse(d), Parsed::Header { .. })
    });
    assert!(headers.count() >= 3);
}

/// Templates: every seed renders within the cap; the corpus holds dynamic ones.
#[test]
fn template_corpus() {
    let seeds = corpus("template");
    assert!(seeds.len() >= 10, "seeds present");
    let mut dynamic = 0;
    for (_, data) in &seeds {
        fuzzing::template(data);
        let text = String::from_utf8_lossy(data);
        if vane::flow::template::Template::parse(&text, Default::default())
            .is_ok_and(|t| t.is_dynamic())
        {
            dynamic += 1;
        }
    }
    assert!(dynamic >= 5, "{dynamic} dynamic templates among the seeds");
}

/// Config documents in every format: the seeds reach the flow compiler, so the corpus tests
/// more than the syntax.
#[test]
fn config_doc_corpus() {
    use vane::config::format::{self, Format};
    let seeds = corpus("config_doc");
    assert!(seeds.len() >= 10, "seeds present");
    let mut parsed = [0usize; 4];
    for (_, data) in &seeds {
        fuzzing::config(data);
        let Some((&pick, rest)) = data.split_first() else {
            continue;
        };
        let fmt = [Format::Toml, Format::Yaml, Format::Json, Format::Ron][pick as usize % 4];
        if format::parse(fmt, &String::from_utf8_lossy(rest)).is_ok() {
            parsed[pick as usize % 4] += 1;
        }
    }
    assert!(
        parsed.iter().all(|n| *n >= 1),
        "documents of every format parse: {parsed:?} (toml, yaml, json, ron)"
    );
}

#[test]
fn http_head_corpus() {
    let seeds = corpus("http_head");
    assert!(seeds.len() >= 5, "seeds present");
    let hosts = seeds
        .iter()
        .inspect(|(_, d)| fuzzing::http_head(d))
        .filter(|(_, d)| vane::l4p::http_head::parse(d).host.is_some())
        .count();
    assert!(hosts >= 2, "heads with a host among the seeds");
}

#[test]
fn plugin_reply_corpus() {
    let seeds = corpus("plugin_reply");
    assert!(seeds.len() >= 5, "seeds present");
    let mut decoded = 0;
    for (_, data) in &seeds {
        fuzzing::plugin_reply(data);
        if vane::plugins::external::decode_reply(data).is_ok() {
            decoded += 1;
        }
    }
    assert!(
        decoded >= 2,
        "replies that decode among the seeds ({decoded})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "regenerates fuzz/corpus from real clients"]
async fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let w = |t: &str, name: &str, d: &[u8]| {
        std::fs::write(root.join(t).join(name), d).expect("write seed")
    };
    w(
        "client_hello",
        "rustls-a",
        &common::tls::client_hello("a.example.com", &["h2", "http/1.1"]),
    );
    w(
        "client_hello",
        "rustls-noalpn",
        &common::tls::client_hello("b.example", &[]),
    );
    let hello = common::tls::client_hello("split.example", &["h2"]);
    // Re-frame the handshake into 100-byte records, as some clients do.
    if let Assembled::Complete { message, .. } = clienthello::assemble(&hello) {
        let mut split = Vec::new();
        for c in message.chunks(100) {
            split.extend_from_slice(&[0x16, 0x03, 0x01]);
            split.extend_from_slice(&(c.len() as u16).to_be_bytes());
            split.extend_from_slice(c);
        }
        w("client_hello", "rustls-split-records", &split);
    }
    w("client_hello", "truncated", &hello[..hello.len() / 2]);
    w("client_hello", "http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = sock.local_addr().expect("addr");
    let ep = common::quic::client(&[], true);
    let connecting = ep.connect(target, "quic.example").expect("connect");
    tokio::spawn(async move {
        let _ = connecting.await;
    });
    let mut d = Vec::new();
    let mut buf = vec![0u8; 65_535];
    for _ in 0..2 {
        let (n, _) =
            tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(&mut buf))
                .await
                .expect("datagram")
                .expect("recv");
        d.push(buf[..n].to_vec());
    }
    assert_eq!(d[0].len(), d[1].len(), "Initial datagrams are padded alike");
    w(
        "quic_initial",
        "quinn-two-datagrams",
        &[d[0].clone(), d[1].clone()].concat(),
    );
    w("quic_initial", "quinn-first-datagram", &d[0]);
    w(
        "quic_initial",
        "garbage",
        &[
            0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x40, 0x20,
        ],
    );

    let (s, dst) = (
        "192.0.2.1:5000".parse().expect("addr"),
        "198.51.100.2:443".parse().expect("addr"),
    );
    let (s6, dst6) = (
        "[2001:db8::1]:5000".parse().expect("addr"),
        "[2001:db8::2]:443".parse().expect("addr"),
    );
    w(
        "proxy_header",
        "v1-tcp4",
        &proxy_protocol::encode(proxy_protocol::Version::V1, s, dst),
    );
    w(
        "proxy_header",
        "v1-tcp6",
        &proxy_protocol::encode(proxy_protocol::Version::V1, s6, dst6),
    );
    w(
        "proxy_header",
        "v2-tcp4",
        &proxy_protocol::encode(proxy_protocol::Version::V2, s, dst),
    );
    w(
        "proxy_header",
        "v2-tcp6",
        &proxy_protocol::encode(proxy_protocol::Version::V2, s6, dst6),
    );
    w("proxy_header", "v1-unknown", b"PROXY UNKNOWN\r\n");
    w("proxy_header", "not-proxy", b"GET / HTTP/1.1\r\n");
}

#[test]
fn h1_request_corpus() {
    let seeds = corpus("h1_request");
    assert!(seeds.len() >= 5, "seeds present");
    let mut with_body = 0;
    for (_, data) in &seeds {
        fuzzing::h1_request(data);
        let mut buf = bytes::BytesMut::from(&data[1..]);
        if let Ok(vane::l7::h1::head::Parsed::Head(h)) =
            vane::l7::h1::head::parse(&mut buf, vane::l7::h1::MAX_HEAD)
        {
            with_body += usize::from(h.body.is_some());
        }
    }
    assert!(
        with_body >= 2,
        "requests with bodies among the seeds ({with_body})"
    );
}

#[test]
fn h2_frames_corpus() {
    let seeds = corpus("h2_frames");
    assert!(seeds.len() >= 5, "seeds present");
    // The seeds hold six whole requests (one across a CONTINUATION, one padded with a
    // priority); the others are broken on purpose.
    let heads: usize = seeds.iter().map(|(_, d)| fuzzing::h2_frames(d)).sum();
    assert_eq!(heads, 6, "whole request heads among the seeds");
}
