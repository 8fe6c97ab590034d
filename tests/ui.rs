//! The status page at `/ui/`, opened in a real headless Chromium: the token is entered once,
//! and the rendered page lists every actor, redraws a restart without a reload, draws each
//! listener's flow with its plugins, and shows an upstream that stopped as down. Screenshots
//! go to the test run's target dir.

mod common;

use std::time::Duration;

use common::cdp::Browser;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn the_status_page_shows_the_live_gateway_in_a_browser() {
    let up = Echo::start("A");
    let cfg = ConfigDir::new();
    let tcp_port = free_port();
    cfg.tcp_proxy(tcp_port, up.addr);
    let http_port = free_port();
    cfg.plain_http(http_port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.common.match:\n    input: { left: \"{{req.path}}\", operator: \"==\", right: \"/x\" }\n    output:\n      \"true\": { internal.terminator.response: { input: { status: 200, body: x } } }\n      \"false\": { internal.terminator.response: { input: { status: 404 } } }\n",
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("HEALTH_TCP_INTERVAL_SECS", "1".into()),
                ("HEALTH_TCP_CONNECT_TIMEOUT_MS", "300".into()),
            ],
            wait_ports: vec![tcp_port, http_port],
        },
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let r = h1(&mut s, &["GET /x HTTP/1.1\r\nHost: a\r\n\r\n"]);
    assert_eq!(r[0].0, 200);

    let browser = Browser::launch();
    let mut page = browser.page();
    page.navigate(&format!("http://{}/ui/", v.mgmt));
    assert!(
        page.wait_for("!document.getElementById('login').hidden", WAIT),
        "the page asks for the token first"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#actors tbody tr').length"),
        serde_json::json!(0),
        "nothing is shown before the token"
    );
    page.eval(&format!(
        "document.getElementById('token').value = {TOKEN:?}; document.getElementById('go').click(); true"
    ));

    // Every actor of GET /actors is listed.
    let (code, body) = v.get("/actors");
    assert_eq!(code, 200);
    let actors: Vec<String> = serde_json::from_str::<serde_json::Value>(&body)
        .expect("actors JSON")
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect();
    assert!(actors.len() >= 5, "{actors:?}");
    let listed =
        |page: &mut common::cdp::Page| -> Vec<String> {
            serde_json::from_value(page.eval(
                "[...document.querySelectorAll('#actors tbody tr')].map(r => r.dataset.actor)",
            ))
            .unwrap_or_default()
        };
    assert!(
        page.wait_for(
            "document.querySelectorAll('#actors tbody tr').length > 0",
            WAIT
        ),
        "the actor table fills in"
    );
    let shown = listed(&mut page);
    for a in &actors {
        assert!(shown.contains(a), "{a} is not on the page: {shown:?}");
    }

    // The listener's flow is drawn with its plugin.
    let flow = format!(
        "[data-flow='listener:tcp:{tcp_port}'] svg [data-plugin='internal.transport.proxy']"
    );
    assert!(
        page.wait_for(&format!("document.querySelector(\"{flow}\")"), WAIT),
        "the listener's flow graph shows its plugin"
    );
    let app_nodes = page.eval(
        "[...document.querySelectorAll(\"[data-flow='application:httpx'] svg .node\")].map(n => n.dataset.plugin)",
    );
    assert_eq!(
        app_nodes.as_array().map(Vec::len),
        Some(3),
        "match and its two responses: {app_nodes}"
    );
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    page.screenshot(&shots.join("status.png"));

    // A panicked actor's restart count rises on the page, without a reload.
    let loaded = page.eval("window.vaneLoadedAt");
    let restarts = |page: &mut common::cdp::Page| {
        page.eval("Number(document.querySelector(\"#actors tr[data-actor='metrics'] .restarts\")?.textContent ?? -1)")
            .as_f64()
            .unwrap_or(-1.0)
    };
    let before = restarts(&mut page);
    assert!(before >= 0.0, "the metrics actor is on the page");
    assert_eq!(v.post("/chaos/panic/metrics").0, 202);
    let start = std::time::Instant::now();
    while restarts(&mut page) <= before && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        restarts(&mut page) > before,
        "the restart shows up on the page"
    );
    assert_eq!(
        page.eval("window.vaneLoadedAt"),
        loaded,
        "the page was not reloaded"
    );

    // An upstream that stops turns down on the page.
    let target = format!("#upstreams tr[data-target='{}'] .health", up.addr);
    assert!(
        page.wait_for(
            &format!("document.querySelector(\"{target}\")?.textContent === 'healthy'"),
            WAIT
        ),
        "the upstream is probed healthy first"
    );
    up.stop();
    drop(up);
    assert!(
        page.wait_for(
            &format!("document.querySelector(\"{target}\")?.textContent === 'down'"),
            WAIT
        ),
        "the stopped upstream is shown down"
    );
    page.screenshot(&shots.join("status-upstream-down.png"));
    assert_eq!(
        page.eval("window.vaneLoadedAt"),
        loaded,
        "still the same page"
    );

    // The API page lists every route of the OpenAPI document and sends requests with the
    // session's token.
    page.navigate(&format!("http://{}/", v.mgmt));
    assert!(
        page.wait_for(
            "document.querySelectorAll('details.route').length > 0",
            WAIT
        ),
        "GET / leads to the API page, which lists the routes"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('details.route').length"),
        serde_json::json!(vane::ops::routes::ROUTES.len())
    );
    page.eval(
        "const d = document.querySelector(\"details[data-route='GET /status']\"); d.open = true; d.querySelector('button').click(); true",
    );
    assert!(
        page.wait_for(
            "document.querySelector(\"details[data-route='GET /status'] .answer\").textContent.startsWith('200')",
            WAIT
        ),
        "the page's request went with the token"
    );
    page.screenshot(&shots.join("api.png"));

    // A wrong token is refused and the page asks again.
    page.navigate(&format!("http://{}/ui/", v.mgmt));
    page.eval("sessionStorage.setItem('vane-token', 'wrong'); true");
    assert!(
        page.wait_for("!document.getElementById('login').hidden", WAIT),
        "a refused token brings the prompt back"
    );
}
