//! Bodies buffered for templates (`src/l7/buffer.rs`) within the limits, still forwarded.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_buffered_for_templates_within_the_limits_and_still_forwarded() {
    let up = upstream(None).await;
    // Requests whose body mentions "go" are forwarded (the buffered body goes up) and the
    // upstream's answer is wrapped; others are answered from the body itself.
    let (cfg, port) = app_dir(&format!(
        r#"pipeline:
  internal.common.match:
    input: {{ left: "{{{{req.body}}}}", operator: contains, right: "go" }}
    output:
      "true":
        internal.driver.upstream:
          input: {{ url_prefix: "http://127.0.0.1:{}" }}
          output:
            success:
              internal.terminator.response:
                input: {{ body: "wrapped[{{{{res.body}}}}] {{{{res.header.x-upstream}}}}" }}
            failure:
              internal.terminator.response: {{ input: {{ status: 502 }} }}
      "false":
        internal.terminator.response:
          input: {{ body: "text={{{{req.body}}}} hex={{{{req.body_hex}}}}" }}
"#,
        up.addr.port()
    ));
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("L7_MAX_BUFFER_SIZE", "32".into())],
            wait_ports: vec![port],
        },
    );
    let post = |body: &'static str, chunked: bool| async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut send = h1_client(tcp).await;
        let frames = vec![Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
            Bytes::from_static(body.as_bytes()),
        ))];
        let mut req = hyper::Request::post("/").header("host", "b.test");
        if !chunked {
            // Without it the body goes chunked, and the cap is checked while reading.
            req = req.header("content-length", body.len());
        }
        let resp = send
            .send_request(
                req.body(http_body_util::StreamBody::new(futures_iter(frames)))
                    .expect("req"),
            )
            .await
            .expect("response");
        let b = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).to_string()
    };
    assert_eq!(post("hi", false).await, "text=hi hex=6869");
    assert_eq!(post("please go", false).await, "wrapped[please go] yes");
    // Over L7_MAX_BUFFER_SIZE (declared or streamed): the placeholders stay literal.
    let long = "this body is longer than thirty-two bytes";
    assert_eq!(
        post(long, false).await,
        "text={{req.body}} hex={{req.body_hex}}"
    );
    assert_eq!(
        post(long, true).await,
        "text={{req.body}} hex={{req.body_hex}}"
    );
}

/// When the global L7 budget is spent, a body a template wants is not buffered: the refusal is
/// counted, the template sees no body, and the request is still answered.
#[test]
fn an_exhausted_global_budget_refuses_buffering_and_still_answers() {
    let (cfg, port) = app_dir(
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: \"got:{{req.body}}\" }\n",
    );
    let post = |port: u16| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let body = "b".repeat(5000);
        s.write_all(
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{body}").as_bytes(),
        )
        .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let roomy = Vane::start(&cfg, &[port]);
    let r = post(port);
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains(&"b".repeat(5000)),
        "{r}"
    );
    drop(roomy);
    let tight = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("L7_ADAPTIVE_MEMORY_LIMIT", "false".into()),
                ("L7_GLOBAL_BUFFER_LIMIT", "1024".into()),
            ],
            wait_ports: vec![port],
        },
    );
    let r = post(port);
    assert!(r.starts_with("HTTP/1.1 200"), "answered: {r}");
    assert!(
        !r.contains(&"b".repeat(2000)),
        "the body was not buffered: {r}"
    );
    assert!(
        tight
            .metric("vane_l7_buffer_refused_total{reason=\"budget\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        tight.metrics_text()
    );
}
