//! vane's HTTP/1.1 proxy path against RFC 9112 (message syntax and framing) and RFC 9110's
//! rules for intermediaries, one case per rule: heads and bodies a client may send (the
//! request-smuggling shapes among them) and answers an upstream may give.
//!
//! Each case runs on a connection of its own, with a second request pipelined behind it. A
//! refused request must be answered and the connection closed: the second request never
//! reaches the upstream, which records everything it receives. Every failing case is
//! reported, not only the first.

use std::sync::Mutex;

use super::*;

/// What a case must get back.
enum Want {
    /// The gateway answers this status and closes; the pipelined request never goes upstream.
    Refused(u16),
    /// Sent upstream (answered 200), and the upstream's copy of the request (head and body
    /// as received) passes the check.
    Forwarded(fn(&str) -> bool),
    /// The client's whole reply (every response on the connection, up to the close) starts
    /// with this status and passes the check.
    Answered(u16, fn(&str) -> bool),
    /// The answer breaks off: the client gets at most its head (200) and then the close, and
    /// the pipelined request is not answered on this connection.
    Cut,
}

struct Case {
    rule: &'static str,
    /// The request, `{p}` standing for the case's path.
    request: &'static str,
    /// The upstream's raw answer to it (a plain 200 when `None`), sent before it closes.
    answer: Option<&'static str>,
    want: Want,
}

fn refused(rule: &'static str, request: &'static str, status: u16) -> Case {
    Case {
        rule,
        request,
        answer: None,
        want: Want::Refused(status),
    }
}

fn forwarded(rule: &'static str, request: &'static str, check: fn(&str) -> bool) -> Case {
    Case {
        rule,
        request,
        answer: None,
        want: Want::Forwarded(check),
    }
}

fn answered(
    rule: &'static str,
    answer: &'static str,
    status: u16,
    check: fn(&str) -> bool,
) -> Case {
    Case {
        rule,
        request: "GET {p} HTTP/1.1\r\nHost: a\r\n\r\n",
        answer: Some(answer),
        want: Want::Answered(status, check),
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn request_cases() -> Vec<Case> {
    vec![
        refused("RFC 9112 3.2: an HTTP/1.1 request without Host", "GET {p} HTTP/1.1\r\n\r\n", 400),
        refused("RFC 9112 3.2: two Host fields", "GET {p} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        refused("RFC 9112 3.2: Host with a userinfo", "GET {p} HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
        refused("RFC 9112 3.2: Host with a space", "GET {p} HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        refused("RFC 9112 3.2.3: authority form outside CONNECT", "GET a HTTP/1.1\r\nHost: a\r\nX-Case: {p}\r\n\r\n", 400),
        refused("RFC 9112 3.2.4: asterisk form (no upstream URL says it)", "OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Case: {p}\r\n\r\n", 400),
        refused("RFC 9112 3: two spaces in the request line", "GET  {p} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        refused("RFC 9112 5.1: whitespace before the colon", "GET {p} HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400),
        refused("RFC 9112 5.2: a folded field", "GET {p} HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400),
        refused("RFC 9110 5.5: a CR alone in a value", "GET {p} HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", 400),
        refused("RFC 9110 5.5: a NUL in a value", "GET {p} HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400),
        refused("RFC 9112 6.1: Transfer-Encoding and Content-Length", "POST {p} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        refused("RFC 9112 6.1: Transfer-Encoding in HTTP/1.0", "POST {p} HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        refused("RFC 9112 6.3: chunked not the last coding", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
        refused("RFC 9112 6.1: chunked twice in one field", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        refused("RFC 9112 6.1: chunked twice in two fields", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        refused("RFC 9112 6.1: a coding before chunked is not implemented", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        refused("RFC 9112 6.3: Content-Length values disagree", "POST {p} HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        refused("RFC 9112 6.3: Content-Length with a sign", "POST {p} HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", 400),
        refused("RFC 9112 6.3: Content-Length past 64 bits", "POST {p} HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\na", 400),
        refused("RFC 9112 7.1: a chunk size not in hex", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1g\r\nx\r\n0\r\n\r\n", 400),
        refused("RFC 9112 7.1: a chunk size past 64 bits", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n", 400),
        refused("RFC 9112 7.1: chunk data longer than its size", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxyz\r\n0\r\n\r\n", 400),
        forwarded("RFC 9112 3.2.2: the absolute form's authority is the host", "GET http://b.example{p} HTTP/1.1\r\nHost: a\r\n\r\n", |up| {
            up.contains("x-forwarded-host: b.example\r\n") && !up.contains("x-forwarded-host: a")
        }),
        forwarded("RFC 9112 3.2: an empty Host", "GET {p} HTTP/1.1\r\nHost: \r\n\r\n", |_| true),
        forwarded("RFC 9112 3.2: HTTP/1.0 needs no Host", "GET {p} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", |_| true),
        forwarded("RFC 9112 2.2: a bare LF ends a line", "GET {p} HTTP/1.1\nHost: a\n\n", |_| true),
        forwarded("RFC 9112 2.2: an empty line before the request", "\r\nGET {p} HTTP/1.1\r\nHost: a\r\n\r\n", |_| true),
        forwarded("RFC 9112 6.3: equal Content-Length values are one", "POST {p} HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nz", |up| {
            up.contains("content-length: 1\r\n") && up.ends_with("\r\n\r\nz")
        }),
        forwarded("RFC 9112 7.1.1: chunk extensions", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n3;ext=\"v\"\r\nxyz\r\n0\r\n\r\n", |up| {
            up.contains("transfer-encoding: chunked\r\n") && up.contains("\r\nxyz\r\n")
        }),
        forwarded("RFC 9112 7.1.2: trailer fields", "POST {p} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\nX-T: 1\r\n\r\n", |up| {
            up.contains("\r\nxyz\r\n")
        }),
        forwarded("RFC 9112 7.1: chunks are re-framed, small ones joined (each went upstream alone, a system call each)", one_byte_chunks(2000), |up| {
            let body = up.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            body.matches('x').count() == 2000 && body.matches("\r\nx\r\n").count() < 50
        }),
        forwarded("RFC 9110 7.6.1: Connection's names and the hop-by-hop fields stay on this hop", "GET {p} HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: 1\r\n\r\n", |up| {
            let up = up.to_ascii_lowercase();
            up.contains("x-kept: 1") && !["x-secret", "keep-alive", "proxy-connection", "te:"].iter().any(|f| up.contains(f))
        }),
    ]
}

/// A chunked upload of `n` one-byte chunks.
fn one_byte_chunks(n: usize) -> &'static str {
    let body = "1\r\nx\r\n".repeat(n);
    let request = format!(
        "POST {{p}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}0\r\n\r\n"
    );
    request.leak()
}

fn response_cases() -> Vec<Case> {
    vec![
        answered("RFC 9112 6.3: a coding beside a length decides", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 200, |r| {
            r.contains("transfer-encoding: chunked") && !r.contains("content-length: 9") && r.contains("\r\n2\r\nok\r\n")
        }),
        answered("RFC 9112 6.3: response Content-Length values disagree", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk", 502, |_| true),
        answered("RFC 9112 6.3: a response Content-Length not a number", "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", 502, |_| true),
        answered("RFC 9112 6.1: a response coding besides chunked (passed on, the client would get coded bytes)", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nGZ\r\n0\r\n\r\n", 502, |_| true),
        answered("RFC 9112 6.1: a response coding without chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nbody", 502, |_| true),
        answered("RFC 9110 15.2.2: a 101 nobody asked for", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw", 502, |_| true),
        answered("RFC 9112 5.2: a folded response field", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\nok", 502, |_| true),
        answered("RFC 9110 15: a status out of range", "HTTP/1.1 99 Odd\r\nContent-Length: 2\r\n\r\nok", 502, |_| true),
        answered("RFC 9112 4: not a status line", "NOT HTTP AT ALL\r\n\r\n", 502, |_| true),
        answered("RFC 9110 15.2: interim answers are not passed on", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, |r| {
            !r.contains(" 103 ") && !r.contains(" 100 ") && r.contains("\r\n\r\nok")
        }),
        answered("RFC 9110 8.6: a 204 says no length", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 204, |r| {
            !first_head(r).contains("content-length")
        }),
        answered("RFC 9112 6.3: a close-delimited answer is framed for the client", "HTTP/1.1 200 OK\r\n\r\nuntil the close", 200, |r| {
            r.contains("transfer-encoding: chunked") && r.contains("until the close")
        }),
        Case {
            want: Want::Cut,
            ..answered("RFC 9112 6.3: an answer cut short of its length ends the client's connection", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 0, |_| true)
        },
        Case {
            want: Want::Cut,
            ..answered("RFC 9112 7.1: a broken chunk ends the client's connection", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", 0, |_| true)
        },
    ]
}

/// The first response's head in a reply.
fn first_head(reply: &str) -> &str {
    reply.split("\r\n\r\n").next().unwrap_or_default()
}

/// What the upstream received, one entry per connection (it closes after each answer).
type Log = Arc<Mutex<Vec<String>>>;

/// An upstream on a raw socket: reads a request (head, then a chunked or counted body),
/// records it, answers from `answers` by the case number in the path (a plain 200 for any
/// other path) and closes.
fn recording_upstream(answers: Vec<Option<&'static str>>) -> (u16, Log) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let log: Log = Arc::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(200) {
            let Ok(mut s) = s else { return };
            let (seen, answers) = (seen.clone(), answers.clone());
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut got = Vec::new();
                let mut chunk = [0u8; 4096];
                while !whole_request(&got) {
                    match s.read(&mut chunk) {
                        Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                let text = String::from_utf8_lossy(&got).into_owned();
                let case = text
                    .split(' ')
                    .nth(1)
                    .and_then(|p| p.strip_prefix("/r"))
                    .and_then(|n| n.parse::<usize>().ok());
                let answer = case
                    .and_then(|i| answers.get(i).copied().flatten())
                    .unwrap_or(OK);
                seen.lock().expect("log").push(text);
                let _ = s.write_all(answer.as_bytes());
            });
        }
    });
    (port, log)
}

/// A head and the body its fields frame have arrived (bodies here are small and simple).
fn whole_request(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let body = &got[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        let body = String::from_utf8_lossy(body);
        let last = if body.starts_with("0\r\n") {
            Some(0)
        } else {
            body.find("\r\n0\r\n").map(|i| i + 2)
        };
        return last.is_some_and(|i| {
            body[i + 3..].starts_with("\r\n") || body[i + 3..].contains("\r\n\r\n")
        });
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

/// Sends case `i` and a pipelined request behind it; the client's whole reply, lowercased.
fn exchange(port: u16, i: usize, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let path = format!("/r{i}");
    let next = format!("GET /r{i}-next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(request.replace("{p}", &path).as_bytes());
    let _ = s.write_all(next.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// What is wrong with case `i`'s outcome, if anything.
fn judge(i: usize, case: &Case, reply: &str, log: &Log) -> Option<String> {
    let status: u16 = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let path = format!("/r{i} ");
    let upstream = || {
        log.lock()
            .expect("log")
            .iter()
            .find(|r| r.contains(&path))
            .cloned()
    };
    let next_went_up = || {
        log.lock()
            .expect("log")
            .iter()
            .any(|r| r.contains(&format!("/r{i}-next")))
    };
    match case.want {
        Want::Refused(want) if status != want => Some(format!("answered {status}, not {want}")),
        Want::Refused(_) if reply.matches("http/1.1 ").count() != 1 => {
            Some("the pipelined request was answered".into())
        }
        Want::Refused(_) if next_went_up() => {
            Some("the pipelined request reached the upstream".into())
        }
        Want::Refused(_) => None,
        Want::Forwarded(check) => match upstream() {
            _ if status != 200 => Some(format!("answered {status}")),
            None => Some("never reached the upstream".into()),
            Some(up) if !check(&up) => Some(format!("the upstream got {up:?}")),
            Some(_) => None,
        },
        Want::Answered(want, _) if status != want => Some(format!("answered {status}, not {want}")),
        Want::Answered(_, check) if !check(reply) => Some(format!("the reply was {reply:?}")),
        Want::Answered(..) => None,
        Want::Cut if reply.matches("http/1.1 ").count() > 1 || ![0, 200].contains(&status) => {
            Some(format!("the reply was {reply:?}"))
        }
        Want::Cut => None,
    }
}

/// Runs the cases on one gateway, which it hands back (with its config dir) for checks of
/// its metrics.
fn run(cases: Vec<Case>) -> (ConfigDir, Vane) {
    let (up, log) = recording_upstream(cases.iter().map(|c| c.answer).collect());
    let (cfg, port, v) = proxy_gateway(&format!("http://127.0.0.1:{up}"), "");
    let mut failed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let reply = exchange(port, i, case.request);
        if let Some(why) = judge(i, case, &reply, &log) {
            failed.push(format!("{}: {why}", case.rule));
        }
    }
    all_cases_pass(&failed, cases.len());
    let refusals = cases
        .iter()
        .filter(|c| matches!(c.want, Want::Refused(_)))
        .count() as f64;
    let malformed = "vane_http_connection_errors_total{kind=\"malformed\"}";
    assert!(
        wait_until(Duration::from_secs(3), || v
            .metric(malformed)
            .unwrap_or(0.0)
            >= refusals),
        "each refusal is counted: {:?} of {refusals}",
        v.metric(malformed)
    );
    (cfg, v)
}

/// Requests a client may send, on vane's own HTTP/1.1 server (hyper's, the fallback, lets
/// several of these through: docs/l7.md).
#[test]
fn request_heads_and_bodies_follow_rfc_9112() {
    if http1_on_hyper() {
        return;
    }
    let (_cfg, v) = run(request_cases());
    // The three broken chunked bodies reached their flow, whose upstream call failed on them
    // (`failure`: 502): they are counted as what the client got.
    let counted = |status: &str| {
        v.metric(&format!(
            "vane_requests_total{{app=\"httpx\",status=\"{status}\"}}"
        ))
    };
    assert!(
        wait_until(Duration::from_secs(3), || counted("400") == Some(3.0)),
        "400: {:?}",
        counted("400")
    );
    assert_eq!(
        counted("502"),
        None,
        "no request is counted as the flow's 502"
    );
}

/// Answers an upstream may give, through vane's HTTP/1.1 client, whichever server took the
/// request.
#[test]
fn upstream_answers_follow_rfc_9112() {
    run(response_cases());
}

/// An HTTPS upstream's HTTP/1.1 answers (read by hyper's client, not vane's) meet the same
/// rule: a transfer coding besides chunked is refused (`upstream.rs` holds the length beside
/// chunked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_s_transfer_codings_are_checked_too() {
    let up = raw_tls_upstream(|_| {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nGZ\r\n0\r\n\r\n"
    })
    .await;
    let (_cfg, port, _v) = proxy_gateway(&format!("https://localhost:{up}"), ", skip_verify: true");
    let reply = tokio::task::spawn_blocking(move || {
        exchange(port, 0, "GET /coded HTTP/1.1\r\nHost: a\r\n\r\n")
    })
    .await
    .expect("client");
    assert!(reply.starts_with("http/1.1 502"), "{reply}");
}
