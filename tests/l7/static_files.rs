//! The static driver (`src/l7/static_files.rs`).

use super::*;

#[test]
fn static_files_indexes_ranges_spa_listings_gzip_and_conditional_requests() {
    let www = tempfile::tempdir().expect("www");
    let w = |rel: &str, bytes: &[u8]| {
        let p = www.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    };
    w("index.html", b"<!doctype html><p>home</p>");
    let hundred: Vec<u8> = (0..100u8).collect();
    w("data.bin", &hundred);
    w("app.js", b"console.log(1)");
    w("app.js.gz", b"\x1f\x8bgzipped-bytes");
    w("docs/a<b>.txt", b"x");
    w(".secret", b"hidden");
    w(".well-known/acme-challenge/tok123", b"tok123.thumbprint");
    w(
        ".well-known/security.txt",
        b"Contact: mailto:sec@example.test",
    );
    w(".well-known/.htpasswd", b"admin:hash");
    w(".git/config", b"[core]");
    w(".env", b"SECRET=1");
    w("docs/.well-known/x", b"not at the root");
    let cfg = ConfigDir::new();
    let (site, spa) = (free_port(), free_port());
    // Two plaintext resolvers: `http` serves with listings, `spa` with the SPA fallback.
    cfg.write(
        &format!("listener/[{site}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: http }\n",
    );
    cfg.write(
        &format!("listener/[{spa}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: spa }\n",
    );
    cfg.write(
        "resolver/http.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n",
    );
    cfg.write(
        "resolver/spa.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n",
    );
    let root = www.path().display();
    cfg.write(
        "application/httpx.yaml",
        &format!(
            r#"pipeline:
  internal.common.match:
    input: {{ left: "{{{{server.port}}}}", operator: "==", right: "{spa}" }}
    output:
      "true":
        internal.driver.static:
          input: {{ root: "{root}", uri: "{{{{req.path}}}}", spa: true }}
          output:
            success: {{ internal.terminator.response: {{}} }}
            not_found: {{ internal.terminator.response: {{ input: {{ status: 404, body: nope }} }} }}
            failure: {{ internal.terminator.response: {{ input: {{ status: 403, body: "{{{{res.error}}}}" }} }} }}
      "false":
        internal.driver.static:
          input: {{ root: "{root}", uri: "{{{{req.path}}}}", browse: true, precompress: true }}
          output:
            success: {{ internal.terminator.response: {{}} }}
            not_found: {{ internal.terminator.response: {{ input: {{ status: 404, body: nope }} }} }}
            failure: {{ internal.terminator.response: {{ input: {{ status: 403, body: "{{{{res.error}}}}" }} }} }}
"#
        ),
    );
    let _v = Vane::start(&cfg, &[site, spa]);
    let get = |port: u16, path: &str, extra: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        h1(
            &mut s,
            &[&format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")],
        )
        .remove(0)
    };
    let (st, head, body) = get(site, "/", "");
    assert_eq!((st, body.as_str()), (200, "<!doctype html><p>home</p>"));
    assert!(head.contains("content-type: text/html"), "{head}");
    let (st, head, body) = get(site, "/data.bin", "");
    assert_eq!((st, body.len()), (200, 100));
    assert!(head.contains("accept-ranges: bytes"));
    let (st, head, body) = get(site, "/data.bin", "Range: bytes=10-19\r\n");
    assert_eq!(st, 206);
    assert!(head.contains("content-range: bytes 10-19/100"), "{head}");
    assert_eq!(body.as_bytes(), &hundred[10..20]);
    let (st, head, _) = get(site, "/data.bin", "Range: bytes=200-\r\n");
    assert_eq!(st, 416);
    assert!(head.contains("content-range: bytes */100"));
    // Conditional requests (beyond 0.9.2): the ETag comes back as 304.
    let (_, head, _) = get(site, "/data.bin", "");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("etag")
        .replacen("w/", "W/", 1); // the helper lower-cases heads
    let (st, _, body) = get(site, "/data.bin", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((st, body.as_str()), (304, ""));
    // Precompressed only for clients that accept gzip.
    let (_, head, body) = get(site, "/app.js", "Accept-Encoding: gzip, br\r\n");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(body.contains("gzipped-bytes"));
    assert!(head.contains("content-type: text/javascript"));
    let (_, head, body) = get(site, "/app.js", "");
    assert!(!head.contains("content-encoding"));
    assert_eq!(body, "console.log(1)");
    // Listings are escaped; dotfiles are never served or listed.
    let (st, _, body) = get(site, "/docs/", "");
    assert_eq!(st, 200);
    assert!(
        body.contains("Index of /docs/") && body.contains("a&lt;b&gt;.txt"),
        "{body}"
    );
    let (_, _, body) = get(site, "/", "").clone();
    assert!(!body.contains(".secret"));
    assert_eq!(get(site, "/.secret", "").0, 404);
    // RFC 8615: the site's /.well-known/ is served (ACME http-01, security.txt), also
    // percent-encoded; other dot-files, and dot-files inside it, are not.
    let (st, _, body) = get(site, "/.well-known/acme-challenge/tok123", "");
    assert_eq!((st, body.as_str()), (200, "tok123.thumbprint"));
    assert_eq!(get(site, "/%2Ewell-known/security.txt", "").0, 200);
    for hidden in [
        "/.git/config",
        "/%2Egit/config",
        "/%2egit/config",
        "/.env",
        "/.well-known/.htpasswd",
        "/.well-known/%2Ehtpasswd",
        "/docs/.well-known/x",
    ] {
        assert_eq!(get(site, hidden, "").0, 404, "{hidden} must stay hidden");
    }
    // Traversal never leaves the root.
    let (st, _, body) = get(site, "/../../etc/passwd", "");
    assert_eq!(st, 404, "{body}");
    assert!(!body.contains("root:"));
    let (st, _, _) = get(site, "/%2e%2e/%2e%2e/etc/passwd", "");
    assert_eq!(st, 404);
    // SPA: unknown routes get the index.
    let (st, _, body) = get(spa, "/some/missing/route", "");
    assert_eq!((st, body.as_str()), (200, "<!doctype html><p>home</p>"));
    assert_eq!(get(site, "/some/missing/route", "").0, 404);
}
