//! The certificate store: the default pair is created at start, new pairs are picked up by
//! hot reload, and a key that does not match its certificate is refused.

mod common;

use std::time::Duration;

use common::*;

fn pair(name: &str) -> (String, String) {
    let k = rcgen::KeyPair::generate().expect("key");
    let c = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&k)
        .expect("cert");
    (c.pem(), k.serialize_pem())
}

/// The first certificate of a PEM text.
fn leaf(pem: &[u8]) -> Option<rustls::pki_types::CertificateDer<'static>> {
    rustls::pki_types::pem::PemObject::from_pem_slice(pem).ok()
}

/// A certificate's SHA-256 fingerprint as `GET /certs` gives it (lower hex).
fn sha256_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

fn cert_ids(v: &Vane) -> Vec<String> {
    let (_, body) = v.get("/certs");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    j["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn default_pair_at_start_and_new_pairs_on_reload() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, "127.0.0.1:9".parse().expect("addr"));
    let v = Vane::start(&cfg, &[port]);
    assert!(
        cfg.path().join("certs/default.crt").is_file()
            && cfg.path().join("certs/default.key").is_file()
    );
    assert!(
        wait_until(Duration::from_secs(3), || cert_ids(&v)
            == vec!["default".to_string()]),
        "{:?}",
        cert_ids(&v)
    );
    let (crt, key) = pair("site.test");
    cfg.write("certs/site.key", &key);
    cfg.write("certs/site.crt", &crt);
    assert!(
        wait_until(Duration::from_millis(2500), || cert_ids(&v)
            .contains(&"site".to_string())),
        "{:?}\n{}",
        cert_ids(&v),
        v.logs()
    );
}

#[test]
fn check_refuses_a_key_that_does_not_match() {
    let cfg = ConfigDir::new();
    let (crt, _) = pair("bad.test");
    let (_, other_key) = pair("other.test");
    cfg.write("certs/bad.crt", &crt);
    cfg.write("certs/bad.key", &other_key);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["check", "--config"])
        .arg(cfg.path())
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("certs/bad.crt: the key in bad.key does not match this certificate"),
        "{text}"
    );
    assert!(
        !cfg.path().join("certs/default.crt").exists(),
        "check writes nothing"
    );
}

#[test]
fn certificates_are_uploaded_checked_and_deleted_through_the_api() {
    let cfg = ConfigDir::new();
    let v = Vane::start(&cfg, &[]);
    let call = |m: &str, p: &str, b: &str| http_with(v.mgmt, m, p, Some(TOKEN), b);
    let (crt, key) = pair("api.test");
    let (_, other_key) = pair("x.test");
    let body = |c: &str, k: &str| serde_json::json!({"cert_pem": c, "key_pem": k}).to_string();
    let (code, text) = call("POST", "/certs/api.test", &body(&crt, &other_key));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("does not match"), "{text}");
    assert!(
        !cfg.path().join("certs/api.test.crt").exists(),
        "nothing written for a bad pair"
    );
    assert_eq!(call("POST", "/certs/api.test", &body(&crt, &key)).0, 201);
    assert!(
        cert_ids(&v).contains(&"api.test".to_string()),
        "in force when the API answered"
    );
    let (code, text) = call("GET", "/certs/api.test", "");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("expires_in_days"), "{text}");
    // 0.9.2's fields: names, issuer, validity, fingerprint, key type; ours: where it came from.
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let d = &doc["data"];
    assert_eq!(d["san"], serde_json::json!(["api.test"]), "{text}");
    assert!(
        d["subject"].is_string() && d["issuer"].is_string(),
        "{text}"
    );
    assert_eq!(d["key_type"], "ECDSA");
    assert_eq!(d["source"], "file");
    let want = sha256_hex(&leaf(crt.as_bytes()).expect("leaf"));
    assert_eq!(d["fingerprint_sha256"], want.as_str());
    for f in ["not_before", "not_after"] {
        let t = d[f].as_str().unwrap_or_default();
        assert!(
            t.len() == 20 && t.ends_with('Z') && &t[10..11] == "T",
            "{f}: {t}"
        );
    }
    assert_eq!(
        call("POST", "/certs/..%2Fetc", &body(&crt, &key)).0,
        400,
        "ids are host names"
    );
    assert_eq!(call("DELETE", "/certs/default", "").0, 400);
    assert_eq!(call("DELETE", "/certs/api.test", "").0, 204);
    assert!(
        !cert_ids(&v).contains(&"api.test".to_string()),
        "deleted certificates are unloaded (0.9.2 kept them)"
    );
}

/// The `default` pair's expiry (Unix seconds) and SHA-256 fingerprint, as loaded.
fn default_in_force(v: &Vane) -> Option<(i64, String)> {
    let (code, body) = v.get("/certs/default");
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    let d = &doc["data"];
    let fp = d["fingerprint_sha256"].as_str().unwrap_or_default();
    (code == 200).then(|| (d["not_after_unix"].as_i64().unwrap_or(0), fp.to_string()))
}

/// A process up for a year must not serve an expired default certificate: a `default` pair
/// that comes within 7 days of its end while vane runs is replaced, and the new one served
/// (0.9.2 looked at start-up only).
#[test]
fn a_default_pair_near_its_end_is_renewed_while_running() {
    let cfg = ConfigDir::new();
    let tls = free_port();
    cfg.tls_terminating(tls, "httpx");
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 204 }\n",
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("DEFAULT_CERT_CHECK_INTERVAL_SECS", "1".into())],
            wait_ports: vec![tls],
        },
    );
    // A pair with two days left, put in place while vane runs (hot reload serves it).
    let k = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("p");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(2);
    let short = params.self_signed(&k).expect("cert");
    cfg.write("certs/default.key", &k.serialize_pem());
    cfg.write("certs/default.crt", &short.pem());
    let short_fp = sha256_hex(short.der());
    let year = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        + 300 * 86_400;
    let renewed = || {
        default_in_force(&v).is_some_and(|(until, fp)| until > year && fp != short_fp) && {
            // What the handshake presents is the pair on disk: a client that trusts only it
            // (webpki: a server certificate for `localhost`) completes the handshake.
            let pem = std::fs::read(cfg.path().join("certs/default.crt")).unwrap_or_default();
            leaf(&pem).is_some_and(|d| {
                common::tls::TlsClient::connect(tls, "localhost", &[], &[&d]).is_ok()
            })
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), renewed),
        "in force: {:?}\n{}",
        default_in_force(&v),
        v.logs()
    );
    // The log line may reach the file a moment after the pair is in force.
    assert!(
        v.wait_log(
            "generated a new self-signed default certificate",
            Duration::from_secs(5)
        ),
        "{}",
        v.logs()
    );
}
