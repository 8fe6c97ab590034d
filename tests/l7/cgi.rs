//! The CGI driver (`src/l7/cgi.rs`).

use super::*;

#[test]
fn cgi_programs_answer_with_their_own_status_headers_and_body() {
    let bin = tempfile::tempdir().expect("bin");
    let script = bin.path().join("app.sh");
    std::fs::write(
        &script,
        r#"body=$(cat)
if [ "$REQUEST_METHOD" = "POST" ] && [ "$body" = "user=admin" ]; then
  printf 'Status: 302 Found\nSet-Cookie: session_id=abc; path=/; HttpOnly\nSet-Cookie: theme=dark\nLocation: /dashboard\n\n'
  exit 0
fi
if [ "$REQUEST_METHOD" = "POST" ]; then
  printf 'Status: 401 Unauthorized\r\nContent-Type: text/plain\r\n\r\nno'
  exit 0
fi
printf 'Content-Type: text/plain\n\n'
printf 'method=%s query=%s token=%s path_info=%s script=%s ua=%s' "$REQUEST_METHOD" "$QUERY_STRING" "${ACCESS_TOKEN:-none}" "$PATH_INFO" "$SCRIPT_NAME" "$HTTP_USER_AGENT"
"#,
    )
    .expect("script");
    let (cfg, port) = app_dir(&format!(
        r#"pipeline:
  internal.driver.cgi:
    input:
      command: /bin/sh
      script: "{}"
      method: "{{{{req.method}}}}"
      uri: "{{{{req.path}}}}?{{{{req.query}}}}"
      script_name: /cgi
      timeout: 5
    output:
      success: {{ internal.terminator.response: {{}} }}
      failure: {{ internal.terminator.response: {{ input: {{ status: 504, body: "cgi: {{{{plugin.internal_driver_cgi.error}}}}" }} }} }}
"#,
        script.display()
    ));
    let _v = Vane::start(&cfg, &[port]);
    let ask = |req: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(req.as_bytes()).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    let r = ask("GET /cgi/extra/path?x=1 HTTP/1.1\r\nHost: c\r\nUser-Agent: probe\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A `\n\n` header block keeps the whole body (0.9.2 lost its first two bytes); the child
    // does not inherit Vane's environment (its ACCESS_TOKEN).
    assert!(
        r.contains(
            "\r\nmethod=GET query=x=1 token=none path_info=/extra/path script=/cgi ua=probe\r\n"
        ),
        "{r}"
    );
    let r = ask("POST /cgi?x=1 HTTP/1.1\r\nHost: c\r\nContent-Length: 10\r\nConnection: close\r\n\r\nuser=admin");
    let lower = r.to_ascii_lowercase();
    assert!(r.starts_with("HTTP/1.1 302"), "{r}");
    assert!(lower.contains("location: /dashboard"));
    assert!(lower.contains("set-cookie: session_id=abc; path=/; httponly"));
    assert!(
        lower.contains("set-cookie: theme=dark"),
        "both cookies kept: {r}"
    );
    let r = ask(
        "POST /cgi?x=1 HTTP/1.1\r\nHost: c\r\nContent-Length: 5\r\nConnection: close\r\n\r\nguest",
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(r.contains("\r\nno\r\n"), "{r}");
}

/// `CGI_PASS_ENV` lets named variables of Vane's environment through to CGI programs (scripts
/// that need HOME, LANG or PYTHONPATH), and nothing else; `ACCESS_TOKEN` never, even listed.
#[test]
fn cgi_programs_inherit_only_the_variables_cgi_pass_env_names() {
    let bin = tempfile::tempdir().expect("bin");
    let script = bin.path().join("env.sh");
    std::fs::write(
        &script,
        "printf 'Content-Type: text/plain\\n\\n'\nprintf 'home=%s lang=%s extra=%s token=%s' \"${HOME:-unset}\" \"${LANG:-unset}\" \"${VANE_TEST_EXTRA:-unset}\" \"${ACCESS_TOKEN:-unset}\"\n",
    )
    .expect("script");
    let (cfg, port) = app_dir(
        &format!(
            "pipeline:\n  internal.driver.cgi:\n    input: {{ command: /bin/sh, script: \"{}\", uri: \"{{{{req.path}}}}\", method: GET, timeout: 5 }}\n    output:\n      success: {{ internal.terminator.response: {{}} }}\n      failure: {{ internal.terminator.response: {{ input: {{ status: 504 }} }} }}\n",
            script.display()
        ),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("CGI_PASS_ENV", "HOME, LANG,ACCESS_TOKEN".into()),
                ("HOME", "/home/cgi-test".into()),
                ("LANG", "C.UTF-8".into()),
                ("VANE_TEST_EXTRA", "not-listed".into()),
            ],
            wait_ports: vec![port],
        },
    );
    // The answer streams (chunked): read it whole, up to the close.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /env HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}\n{}", v.logs());
    assert!(
        text.contains("home=/home/cgi-test lang=C.UTF-8 extra=unset token=unset"),
        "only the listed variables, never the token: {text}"
    );
}

/// A program that sends no header block within the step's `timeout` takes the `failure`
/// branch with `CGI header timeout`; a body past `CGI_BODY_MAX_SIZE_BYTE` is cut off (the
/// client never receives more than the cap, and the response does not end cleanly).
#[test]
fn cgi_header_timeout_and_body_cap() {
    let bin = tempfile::tempdir().expect("bin");
    let script = bin.path().join("app.sh");
    std::fs::write(
        &script,
        r#"if [ "$PATH_INFO" = "/slow" ]; then sleep 4; fi
printf 'Content-Type: text/plain\n\n%03000d' 0
i=0
while [ $i -lt 50 ]; do printf '%0100d' 0; sleep 0.01; i=$((i+1)); done
"#,
    )
    .expect("script");
    let (cfg, port) = app_dir(&format!(
        r#"pipeline:
  internal.driver.cgi:
    input: {{ command: /bin/sh, script: "{}", method: GET, uri: "{{{{req.path}}}}", script_name: /cgi, timeout: 1 }}
    output:
      success: {{ internal.terminator.response: {{}} }}
      failure: {{ internal.terminator.response: {{ input: {{ status: 504, body: "cgi: {{{{plugin.internal_driver_cgi.error}}}}" }} }} }}
"#,
        script.display()
    ));
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("CGI_BODY_MAX_SIZE_BYTE", "4000".into())],
            wait_ports: vec![port],
        },
    );
    let ask = |path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("timeout");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    let r = ask("/cgi/slow");
    assert!(r.starts_with("HTTP/1.1 504"), "{r}");
    assert!(r.ends_with("cgi: CGI header timeout"), "{r}");
    // 8,000 bytes of body against a cap of 4,000: the first 3,000 come in the write that ends
    // the header block, so they are read with it and must count too; the rest trickle.
    let r = ask("/cgi/big");
    // vane's HTTP/1.1 server has sent the head by then; hyper's may drop the connection first.
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 200"), "{r}");
    // Counting '0' bytes over the whole answer (head and chunk sizes add a few): the 8,000
    // of the body never all arrive (how much of the first 4,000 does depends on the server).
    let zeros = r.bytes().filter(|b| *b == b'0').count();
    assert!(
        zeros < 4100,
        "no more than the cap reaches the client: {zeros} bytes"
    );
    assert!(
        !r.ends_with("\r\n0\r\n\r\n"),
        "the chunked body is not ended as if complete"
    );
}
