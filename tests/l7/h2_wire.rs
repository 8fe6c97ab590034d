//! vane's HTTP/2 server (`src/l7/h2/`) on the wire, frame by frame, where a client library
//! would hide what is tested: flow control, PING, malformed requests counted, the stream limit
//! and resets, floods. (Protocol errors rule by rule are `h2_conformance`'s; the rest of the L7
//! suite drives the server with hyper's client.)

use std::io::Write;
use std::time::Instant;

use super::h2_raw::*;
use super::*;

#[test]
fn a_client_gets_no_more_than_its_window_and_pings_are_answered() {
    let (_cfg, port, _v) = gateway(ECHO_APP);
    // A stream window of 10 bytes.
    let mut c = H2::connect(port, &[(0x4, 10)]);
    c.send(PING, 0, 0, b"12345678");
    let seen = c.until(|f| f.kind == PING);
    let ping = seen.last().expect("ping");
    assert_eq!((ping.flags, &ping.payload[..]), (1, &b"12345678"[..]));
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/w", &[]));
    let head = c.head(1);
    assert!(head.contains(&(":status".into(), "201".into())), "{head:?}");
    let length = length_of(&head);
    assert!(length > 10, "the body must exceed the window: {length}");
    // Ten bytes, then nothing until the window grows.
    let mut body = Vec::new();
    c.s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    while let Some(f) = c.next() {
        assert_eq!((f.kind, f.stream), (DATA, 1));
        body.extend_from_slice(&f.payload);
    }
    assert_eq!(body.len(), 10, "sent past the window");
    c.s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.send(WINDOW_UPDATE, 0, 1, &1000u32.to_be_bytes());
    let seen = c.until(|f| f.kind == DATA && f.flags & END_STREAM != 0);
    for f in &seen {
        body.extend_from_slice(&f.payload);
    }
    assert_eq!(body.len(), length);
    assert!(String::from_utf8_lossy(&body).starts_with("GET /w?"));
}

/// RFC 9113 6.9.2: a change of SETTINGS_INITIAL_WINDOW_SIZE moves the window of every open
/// stream by the difference, below zero too; a stream then sends only once its window is
/// back above zero.
#[test]
fn a_settings_change_moves_the_windows_of_open_streams_even_below_zero() {
    let (_cfg, port, _v) = gateway(ECHO_APP);
    // Streams start with no window at all.
    let mut c = H2::connect(port, &[(0x4, 0)]);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/w", &[]));
    let length = length_of(&c.head(1));
    assert!(length > 10, "{length}");
    c.s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    // The DATA bytes that come until the server falls silent.
    let data = |c: &mut H2| -> usize {
        let mut n = 0;
        while let Some(f) = c.next() {
            if f.kind == DATA {
                assert_eq!(f.stream, 1);
                n += f.payload.len();
            }
        }
        n
    };
    assert_eq!(data(&mut c), 0, "sent without a window");
    c.send(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 5]);
    assert_eq!(data(&mut c), 5, "the window grew by 5");
    // 2 - 5 = -3 after sending 5.
    c.send(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 2]);
    c.send(WINDOW_UPDATE, 0, 1, &3u32.to_be_bytes());
    assert_eq!(
        data(&mut c),
        0,
        "sent while the window was at or below zero"
    );
    c.send(WINDOW_UPDATE, 0, 1, &1u32.to_be_bytes());
    assert_eq!(data(&mut c), 1, "one byte of window");
    c.send(WINDOW_UPDATE, 0, 1, &10_000u32.to_be_bytes());
    assert_eq!(data(&mut c), length - 6, "the rest");
}

#[test]
fn malformed_requests_reset_their_stream_and_the_connection_goes_on() {
    let (_cfg, port, v) = gateway(ECHO_APP);
    let mut c = H2::connect(port, &[]);
    let bad: [Vec<u8>; 4] = [
        get("/", &[("X-Upper", "1")]),
        get("/", &[("connection", "close")]),
        get("/", &[("te", "gzip")]),
        // No :path.
        vec![
            0x82, 0x86, 0x01, 7, b'h', b'2', b'.', b't', b'e', b's', b't',
        ],
    ];
    for (i, block) in bad.iter().enumerate() {
        let id = 1 + 2 * i as u32;
        c.send(HEADERS, END_STREAM | END_HEADERS, id, block);
        let seen = c.until(|f| f.kind == RST_STREAM);
        let rst = seen.last().expect("reset");
        assert_eq!(
            (rst.stream, rst.code()),
            (id, 1),
            "PROTOCOL_ERROR for stream {id}"
        );
    }
    c.send(HEADERS, END_STREAM | END_HEADERS, 9, &get("/ok", &[]));
    let seen = c.until(|f| f.kind == HEADERS);
    assert_eq!(seen.last().expect("head").stream, 9);
    let malformed = "vane_http_connection_errors_total{kind=\"malformed\"}";
    assert!(wait_until(Duration::from_secs(3), || v
        .metric(malformed)
        .is_some_and(|n| n >= 4.0)));
}

#[test]
fn streams_past_the_limit_are_refused_and_reset_ones_free_their_place() {
    let hang_at = silent::hanging_upstream();
    let app = split_app(
        "/hang",
        &format!("url_prefix: \"http://{hang_at}\""),
        "url_prefix: \"http://127.0.0.1:9\"",
    );
    let (_cfg, port, _v) = gateway(&app);
    let mut c = H2::connect(port, &[]);
    const LIMIT: u32 = 256;
    let open = |c: &mut H2, first: u32| {
        let mut burst = Vec::new();
        for i in 0..=LIMIT {
            burst.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                first + 2 * i,
                &get("/hang", &[]),
            ));
        }
        c.s.write_all(&burst).expect("burst");
        // Only the one past the limit is refused.
        let seen = c.until(|f| f.kind == RST_STREAM);
        let rst = seen.last().expect("reset");
        assert_eq!(
            (rst.stream, rst.code()),
            (first + 2 * LIMIT, 7),
            "REFUSED_STREAM"
        );
    };
    open(&mut c, 1);
    // The client resets every stream; the PING's answer comes after the resets are taken.
    let mut burst = Vec::new();
    for i in 0..LIMIT {
        burst.extend(frame(RST_STREAM, 0, 1 + 2 * i, &8u32.to_be_bytes()));
    }
    c.s.write_all(&burst).expect("resets");
    c.send(PING, 0, 0, b"barrier!");
    c.until(|f| f.kind == PING && f.payload == b"barrier!");
    // Their flows stopped: as many new streams are served, and again only one more is
    // refused.
    open(&mut c, 1 + 2 * (LIMIT + 1));
}

#[test]
fn cookies_are_joined_and_expect_continue_is_answered_at_once() {
    let app = r#"pipeline:
  internal.terminator.response:
    input: { status: 200, body: "cookie={{req.header.cookie}}" }
"#;
    let (_cfg, port, _v) = gateway(app);
    let mut c = H2::connect(port, &[]);
    let req = block(
        0x83,
        "/up",
        &[
            ("cookie", "a=1"),
            ("content-length", "5"),
            ("expect", "100-continue"),
            ("cookie", "b=2"),
        ],
    );
    c.send(HEADERS, END_HEADERS, 1, &req);
    // 100 before any byte of the body was sent.
    let seen = c.until(|f| f.kind == HEADERS);
    let interim = seen.last().expect("interim");
    assert_eq!(interim.flags & END_STREAM, 0);
    assert_eq!(
        c.fields(&interim.payload),
        [(":status".to_string(), "100".to_string())]
    );
    c.send(DATA, END_STREAM, 1, b"hello");
    let head = c.head(1);
    assert!(head.contains(&(":status".into(), "200".into())), "{head:?}");
    let body = c.body();
    assert_eq!(String::from_utf8_lossy(&body), "cookie=a=1; b=2");
}

#[test]
fn a_stream_reset_for_its_priority_keeps_the_header_table_in_step() {
    let (_cfg, port, _v) = gateway(ECHO_APP);
    let mut c = H2::connect(port, &[]);
    // Stream 1 depends on itself; its block adds `:authority: h2.test` to the table.
    let mut payload = vec![0, 0, 0, 1, 15];
    payload.extend_from_slice(&[0x82, 0x86, 0x84, 0x41, 7]);
    payload.extend_from_slice(b"h2.test");
    c.send(HEADERS, END_STREAM | END_HEADERS | 0x20, 1, &payload);
    let seen = c.until(|f| f.kind == RST_STREAM);
    let rst = seen.last().expect("reset");
    assert_eq!((rst.stream, rst.code()), (1, 1), "PROTOCOL_ERROR");
    // Stream 3 names the authority by its table index (62): the table kept it.
    c.send(
        HEADERS,
        END_STREAM | END_HEADERS,
        3,
        &[0x82, 0x86, 0x84, 0xbe],
    );
    let body = c.body();
    assert!(
        String::from_utf8_lossy(&body).contains("host=h2.test"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn a_body_longer_than_its_content_length_resets_its_stream() {
    let (_cfg, port, _v) = gateway(ECHO_APP);
    let mut c = H2::connect(port, &[]);
    // Both frames in one write, so they are read before the flow can answer.
    let head = block(0x83, "/", &[("content-length", "3")]);
    let both = [
        frame(HEADERS, END_HEADERS, 1, &head),
        frame(DATA, END_STREAM, 1, b"hello"),
    ]
    .concat();
    c.s.write_all(&both).expect("send");
    let seen = c.until(|f| f.kind == RST_STREAM);
    let rst = seen.last().expect("reset");
    assert_eq!((rst.stream, rst.code()), (1, 1), "PROTOCOL_ERROR");
    // DATA on stream 0 (no stream at all) ends the connection instead.
    c.send(DATA, 0, 0, b"x");
    let seen = c.until(|f| f.kind == GOAWAY);
    assert_eq!(seen.last().expect("goaway").code(), 1);
}

#[test]
fn a_panicking_flow_resets_only_its_stream() {
    let (_cfg, port, v) = gateway(ECHO_APP);
    // A served request first: every connection made before (the start-up probe's) has been
    // accepted then, so the armed panic goes to the next one, which is this test's.
    let mut warm = H2::connect(port, &[]);
    warm.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/warm", &[]));
    warm.body();
    // The next connection's first request panics inside its flow.
    let (code, body) = v.post(&format!("/chaos/panic/listeners/tcp:{port}/sessions"));
    assert_eq!(code, 202, "{body}");
    let mut c = H2::connect(port, &[]);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/first", &[]));
    let seen = c.until(|f| f.kind == RST_STREAM);
    let rst = seen.last().expect("reset");
    assert_eq!((rst.stream, rst.code()), (1, 2), "INTERNAL_ERROR");
    // The connection's next stream is served.
    c.send(HEADERS, END_STREAM | END_HEADERS, 3, &get("/second", &[]));
    let body = c.body();
    assert!(String::from_utf8_lossy(&body).starts_with("GET /second?"));
    let panics = format!("vane_session_panics_total{{listener=\"tcp:{port}\"}}");
    assert!(wait_until(Duration::from_secs(3), || v.metric(&panics) == Some(1.0)));
}

/// curl (nghttp2 inside), a client users have: ten requests multiplexed on one prior-knowledge
/// connection, and a 3 MiB upload through to an upstream that echoes it (more than the
/// connection window, so the window must come back as the flow reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_multiplexes_and_uploads_over_http2() {
    let curl = ensure_tool("curl", "curl");
    let up = upstream(None).await;
    let (cfg, port) = app_dir(&proxy_app(&format!("http://{}", up.addr), ""));
    let _v = tokio::task::spawn_blocking(move || {
        let v = Vane::start_with(
            &cfg,
            Opts {
                env: vec![("HTTP2_SERVER", "vane".to_string())],
                wait_ports: vec![port],
            },
        );
        (cfg, v)
    })
    .await
    .expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    let upload = dir.path().join("up.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&upload, &data).expect("write");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let run = move |args: Vec<String>| {
        let curl = curl.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(curl)
                .args(["--http2-prior-knowledge", "-s", "--max-time", "20"])
                .args(args)
                .output()
                .expect("curl runs")
        })
    };
    let mut args = vec!["--parallel".to_string(), "--parallel-immediate".to_string()];
    for i in 0..10 {
        args.extend([
            "-w".into(),
            "%{http_version} %{http_code}\\n".into(),
            "-o".into(),
        ]);
        args.push("/dev/null".into());
        args.push(url(&format!("/m{i}")));
    }
    let out = run(args.clone()).await.expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| *l == "2 200").count(), 10, "{text}");
    let out = run(vec![
        "--data-binary".into(),
        format!("@{}", upload.display()),
        "-o".into(),
        dir.path().join("down.bin").display().to_string(),
        "-w".into(),
        "%{http_code}".into(),
        url("/echo"),
    ])
    .await
    .expect("join");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let back = std::fs::read(dir.path().join("down.bin")).expect("read");
    assert!(
        back == data,
        "the upload came back changed ({} bytes)",
        back.len()
    );
}

#[test]
fn an_idle_connection_gets_a_goaway_before_it_closes() {
    let (cfg, port) = app_dir(ECHO_APP);
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("HTTP2_SERVER", "vane".to_string()),
                ("HTTP_IDLE_TIMEOUT_SECS", "1".to_string()),
            ],
            wait_ports: vec![port],
        },
    );
    let mut c = H2::connect(port, &[]);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/", &[]));
    c.body();
    // Quiet for 1-1.25 s: GOAWAY naming stream 1 as the last one served, then the close.
    let seen = c.until(|f| f.kind == GOAWAY);
    let goaway = seen.last().expect("goaway");
    assert_eq!(goaway.code(), 0, "NO_ERROR");
    assert_eq!(
        u32::from_be_bytes(goaway.payload[..4].try_into().expect("4 bytes")),
        1
    );
    assert!(c.next().is_none(), "the connection closes");
}

/// A client that sends PINGs and never reads the answers (the ping and settings floods of
/// CVE-2019-9512 and -9515): the server stops reading it once its answers back up, so the
/// client's writes stall with a bounded amount taken, memory stays flat, and other clients are
/// served meanwhile.
#[test]
fn a_client_that_never_reads_is_no_longer_read() {
    let (_cfg, port, v) = gateway(ECHO_APP);
    let before = rss_kib(v.pid());
    let mut c = H2::connect(port, &[]);
    c.s.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // 1 MiB of PING frames at a time, up to 256 MiB.
    let burst: Vec<u8> = (0..1024 * 1024 / 17)
        .flat_map(|_| frame(PING, 0, 0, b"flooding"))
        .collect();
    let mut taken = 0usize;
    // A short write counts what it took; the stall shows as the next one's timeout.
    let stalled = (0..256).any(|_| match c.s.write(&burst) {
        Ok(n) => {
            taken += n;
            false
        }
        Err(_) => true,
    });
    assert!(
        stalled,
        "the server read all {taken} bytes of a client that never reads"
    );
    // The kernel's socket buffers (up to about 10 MiB on loopback) and the server's 64 KiB.
    assert!(taken < 48 << 20, "took {taken} bytes");
    let grown = rss_kib(v.pid()).saturating_sub(before);
    assert!(grown < 16 * 1024, "the server grew by {grown} KiB");
    // Everyone else is served.
    let mut other = H2::connect(port, &[]);
    other.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/", &[]));
    assert!(String::from_utf8_lossy(&other.body()).starts_with("GET /?"));
}

/// A client that stops reading in the middle of a large response and then reads again gets
/// all of it: once the server's output backs up (the socket takes no more), finishing that
/// write must set the response's body going again, with nothing else left to wake it.
#[test]
fn a_client_that_pauses_reading_gets_the_whole_response() {
    let (_www, app, data) = big_file_app();
    let (_cfg, port, _v) = gateway(&app);
    // Windows as large as they go: only the socket holds the response back.
    let mut c = H2::connect(port, &[(0x4, 0x7fff_ffff)]);
    c.send(
        WINDOW_UPDATE,
        0,
        0,
        &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
    );
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/big.bin", &[]));
    std::thread::sleep(Duration::from_millis(700));
    let mut got = Vec::with_capacity(data.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(f) = c.next() else { break };
        if f.kind == DATA && f.stream == 1 {
            got.extend_from_slice(&f.payload);
            if f.flags & END_STREAM != 0 {
                break;
            }
        }
    }
    assert_eq!(
        got.len(),
        data.len(),
        "the response stopped after {} bytes",
        got.len()
    );
    assert!(got == data, "the response came back changed");
}

/// A browser: Chromium opens a page over TLS, negotiates `h2` by ALPN and gets it from vane's
/// HTTP/2 server.
#[test]
fn chromium_loads_a_page_over_http2() {
    let cfg = ConfigDir::new();
    let port = free_port();
    tls_port(&cfg, port);
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: \"<html><body><p id=v>{{req.version}}</p></body></html>\" }\n",
    );
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("HTTP2_SERVER", "vane".to_string())],
            wait_ports: vec![port],
        },
    );
    // The certificate is vane's own self-signed default.
    let browser = common::cdp::Browser::launch_with(&["--ignore-certificate-errors"]);
    let mut page = browser.page();
    page.navigate(&format!("https://localhost:{port}/page"));
    let wait = Duration::from_secs(10);
    assert!(
        page.wait_for("document.getElementById('v') !== null", wait),
        "the page never loaded"
    );
    assert_eq!(
        page.eval("document.getElementById('v').textContent"),
        serde_json::json!("HTTP/2.0")
    );
    assert_eq!(
        page.eval("performance.getEntriesByType('navigation')[0].nextHopProtocol"),
        serde_json::json!("h2")
    );
}

/// An upstream's HTTP/1.1 field names come in any case; HTTP/2 wants them lowercase (a
/// client may refuse a response with an uppercase one).
#[test]
fn an_upstreams_field_names_go_out_lowercase() {
    let (up, _) = recorder(
        b"HTTP/1.1 200 OK\r\nX-Mixed-Case: v\r\nServer: Upstream\r\nContent-Length: 2\r\n\r\nok",
        |b| b.windows(4).any(|w| w == b"\r\n\r\n"),
    );
    let (_cfg, port, _v) = gateway(&proxy_app(&format!("http://{up}"), ""));
    let mut c = H2::connect(port, &[]);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/", &[]));
    let head = c.head(1);
    assert!(
        head.contains(&("x-mixed-case".into(), "v".into())),
        "{head:?}"
    );
    assert!(
        head.contains(&("server".into(), "Upstream".into())),
        "{head:?}"
    );
    assert!(
        head.iter()
            .all(|(n, _)| !n.bytes().any(|b| b.is_ascii_uppercase())),
        "{head:?}"
    );
    assert_eq!(c.body(), b"ok");
}
