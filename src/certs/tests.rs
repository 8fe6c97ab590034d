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

/// The value of the extension `oid` (its DER, without the tag) in certificate `der`: the
/// OCTET STRING after the OID, skipping a `critical` flag. Enough for the certificates this
/// module writes (short lengths).
fn extension<'a>(der: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    let at = der.windows(oid.len()).position(|w| w == oid)? + oid.len();
    let mut p = at;
    if der.get(p) == Some(&0x01) {
        p += 3; // BOOLEAN critical
    }
    (der.get(p) == Some(&0x04)).then_some(())?;
    let len = usize::from(*der.get(p + 1)?);
    der.get(p + 2..p + 2 + len)
}

#[test]
fn the_default_certificate_names_its_key_and_is_no_ca() {
    let root = tempfile::tempdir().expect("tmp");
    assert_eq!(ensure_default(root.path()).ok(), Some(true));
    let crt = root.path().join("certs/default.crt");
    let der = CertificateDer::from_pem_file(&crt).expect("pem");
    // OID 2.5.29.14 subjectKeyIdentifier: OCTET STRING of the key id.
    let skid = extension(&der, &[0x06, 0x03, 0x55, 0x1d, 0x0e]).expect("a subject key id");
    assert_eq!(skid.first(), Some(&0x04));
    let id = &skid[2..];
    assert!(id.len() >= 8, "{skid:02x?}");
    // 2.5.29.35 authorityKeyIdentifier: SEQUENCE { [0] key id }, the same key (self-signed).
    let akid = extension(&der, &[0x06, 0x03, 0x55, 0x1d, 0x23]).expect("an authority key id");
    assert!(akid.ends_with(id), "{akid:02x?} names {id:02x?}");
    // 2.5.29.19 basicConstraints, critical: an empty SEQUENCE (cA false).
    let bc = extension(&der, &[0x06, 0x03, 0x55, 0x1d, 0x13]).expect("basic constraints");
    assert_eq!(bc, [0x30, 0x00]);
    // The pair still loads and serves.
    let (store, problems) = load(root.path(), None);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        store.select("localhost").map(|c| c.id.clone()).as_deref(),
        Some("default")
    );
}
