use super::*;

fn write_pair(dir: &Path, id: &str, names: &[&str]) -> rcgen::KeyPair {
    let k = rcgen::KeyPair::generate().expect("key");
    let c = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params")
        .self_signed(&k)
        .expect("cert");
    std::fs::write(dir.join(format!("{id}.crt")), c.pem()).expect("crt");
    std::fs::write(dir.join(format!("{id}.key")), k.serialize_pem()).expect("key");
    k
}

#[test]
fn default_is_created_once_and_pairs_are_selected_by_sni() {
    let root = tempfile::tempdir().expect("tmp");
    let dir = root.path().join("certs");
    assert_eq!(ensure_default(root.path()).ok(), Some(true));
    assert_eq!(
        ensure_default(root.path()).ok(),
        Some(false),
        "valid for a year: not regenerated"
    );
    write_pair(&dir, "api.example.com", &["api.example.com"]);
    write_pair(&dir, "*.example.com", &["*.example.com"]);
    write_pair(&dir, "_.example.org", &["*.example.org"]);
    let (store, problems) = load(root.path(), None);
    assert!(problems.is_empty(), "{problems:?}");
    let id = |n: &str| store.select(n).map(|c| c.id.clone());
    assert_eq!(id("api.example.com").as_deref(), Some("api.example.com"));
    assert_eq!(id("www.example.com").as_deref(), Some("*.example.com"));
    assert_eq!(
        id("a.b.example.com").as_deref(),
        Some("default"),
        "a wildcard covers one label"
    );
    assert_eq!(id("x.example.org").as_deref(), Some("_.example.org"));
    assert_eq!(id("other.test").as_deref(), Some("default"));
}

#[test]
fn a_mismatched_key_is_refused_and_the_last_good_pair_stays() {
    let root = tempfile::tempdir().expect("tmp");
    let dir = root.path().join("certs");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_pair(&dir, "site", &["site.test"]);
    let (first, problems) = load(root.path(), None);
    assert!(problems.is_empty());
    let other = rcgen::KeyPair::generate().expect("key");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(dir.join("site.key"), other.serialize_pem()).expect("swap key");
    let (second, problems) = load(root.path(), Some(&first));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, "certs/site.crt");
    assert!(
        problems[0].message.contains("does not match"),
        "{}",
        problems[0].message
    );
    assert!(
        second.by_id.contains_key("site"),
        "the last good pair is kept"
    );
}
