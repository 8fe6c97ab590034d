//! Just enough DER to read a certificate's validity and DNS names (sans-IO, bounds-checked).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reads one TLV at `pos`: (tag, content range end, content start).
fn tlv(b: &[u8], pos: usize) -> Option<(u8, usize, usize)> {
    let tag = *b.get(pos)?;
    let first = *b.get(pos + 1)?;
    let (len, start) = if first < 0x80 {
        (first as usize, pos + 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(pos + 2 + i)? as usize;
        }
        (len, pos + 2 + n)
    };
    let end = start.checked_add(len)?;
    (end <= b.len()).then_some((tag, end, start))
}

/// The fields of TBSCertificate after the version: (position of `validity`, end of TBS).
fn tbs_validity(cert: &[u8]) -> Option<(usize, usize)> {
    let (_, _, tbs_outer) = tlv(cert, 0)?; // Certificate SEQUENCE
    let (_, tbs_end, mut p) = tlv(cert, tbs_outer)?; // TBSCertificate SEQUENCE
    if *cert.get(p)? == 0xa0 {
        p = tlv(cert, p)?.1; // [0] version
    }
    for _ in 0..3 {
        p = tlv(cert, p)?.1; // serial, signature algorithm, issuer
    }
    Some((p, tbs_end))
}

/// `notBefore` and `notAfter` of an X.509 certificate.
pub fn validity(cert: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (p, _) = tbs_validity(cert)?;
    let (_, _, v) = tlv(cert, p)?; // Validity SEQUENCE
    let (tag, nb_end, nb_start) = tlv(cert, v)?;
    let not_before = parse_time(tag, std::str::from_utf8(&cert[nb_start..nb_end]).ok()?)?;
    let (tag, end, start) = tlv(cert, nb_end)?;
    let not_after = parse_time(tag, std::str::from_utf8(&cert[start..end]).ok()?)?;
    Some((not_before, not_after))
}

/// `notAfter` of an X.509 certificate.
pub fn not_after(cert: &[u8]) -> Option<SystemTime> {
    validity(cert).map(|(_, a)| a)
}

/// The common names (CN) of the issuer and of the subject, when they have one.
pub fn common_names(cert: &[u8]) -> (Option<String>, Option<String>) {
    let Some((validity, _)) = tbs_validity(cert) else {
        return (None, None);
    };
    // The issuer is the TLV before the validity: walk again to find where it starts.
    let issuer = (|| {
        let (_, _, tbs_outer) = tlv(cert, 0)?;
        let (_, _, mut p) = tlv(cert, tbs_outer)?;
        if *cert.get(p)? == 0xa0 {
            p = tlv(cert, p)?.1;
        }
        p = tlv(cert, p)?.1; // serial
        p = tlv(cert, p)?.1; // signature algorithm
        cn(cert, p)
    })();
    let subject = tlv(cert, validity).and_then(|(_, end, _)| cn(cert, end));
    (issuer, subject)
}

/// The first CN attribute of the Name at `pos`.
fn cn(cert: &[u8], pos: usize) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let (_, name_end, mut rdn) = tlv(cert, pos)?;
    while rdn < name_end {
        let (_, rdn_end, mut atv) = tlv(cert, rdn)?; // SET
        while atv < rdn_end {
            let (_, atv_end, start) = tlv(cert, atv)?; // SEQUENCE { OID, value }
            if cert.get(start..start + CN_OID.len())? == CN_OID {
                let (_, end, vstart) = tlv(cert, start + CN_OID.len())?;
                return Some(String::from_utf8_lossy(&cert[vstart..end]).into_owned());
            }
            atv = atv_end;
        }
        rdn = rdn_end;
    }
    None
}

/// The DNS names of the subjectAltName extension (lower-case; none when it is absent).
pub fn dns_names(cert: &[u8]) -> Vec<String> {
    san(cert).unwrap_or_default()
}

fn san(cert: &[u8]) -> Option<Vec<String>> {
    const SAN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let (mut p, tbs_end) = tbs_validity(cert)?;
    p = tlv(cert, p)?.1; // validity
    p = tlv(cert, p)?.1; // subject
    p = tlv(cert, p)?.1; // subjectPublicKeyInfo
    while p < tbs_end {
        let (tag, end, start) = tlv(cert, p)?;
        if tag == 0xa3 {
            let (_, exts_end, mut e) = tlv(cert, start)?; // SEQUENCE OF Extension
            while e < exts_end {
                let (_, ext_end, ext_start) = tlv(cert, e)?;
                if cert.get(ext_start..ext_start + SAN_OID.len())? == SAN_OID {
                    let mut q = ext_start + SAN_OID.len();
                    if *cert.get(q)? == 0x01 {
                        q = tlv(cert, q)?.1; // critical
                    }
                    let (_, _, value) = tlv(cert, q)?; // OCTET STRING
                    let (_, names_end, mut n) = tlv(cert, value)?; // GeneralNames
                    let mut out = Vec::new();
                    while n < names_end {
                        let (tag, end, start) = tlv(cert, n)?;
                        if tag == 0x82 {
                            out.push(
                                String::from_utf8_lossy(&cert[start..end]).to_ascii_lowercase(),
                            );
                        }
                        n = end;
                    }
                    return Some(out);
                }
                e = ext_end;
            }
        }
        p = end;
    }
    None
}

fn parse_time(tag: u8, s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let y: i64 = s.get(0..2)?.parse().ok()?;
            (if y >= 50 { 1900 + y } else { 2000 + y }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
    let (mo, d, h, mi, se) = (n(0..2)?, n(2..4)?, n(4..6)?, n(6..8)?, n(8..10)?);
    let days = days_from_civil(year, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_and_times() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let t = parse_time(0x17, "300101000000Z").expect("utc time");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(),
            Some(1_893_456_000)
        );
        assert!(parse_time(0x18, "20300101000000Z").is_some());
        assert!(parse_time(0x17, "garbage").is_none());
    }

    #[test]
    fn reads_not_after_of_a_generated_certificate_and_survives_truncation() {
        let mut p = rcgen::CertificateParams::new(vec!["x.test".into()]).expect("params");
        p.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let k = rcgen::KeyPair::generate().expect("key");
        let c = p.self_signed(&k).expect("cert");
        let t = not_after(c.der()).expect("notAfter");
        assert_eq!(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() / 86_400)
                .ok(),
            Some(days_from_civil(2031, 7, 15) as u64)
        );
        let der = c.der().to_vec();
        for i in 0..der.len() {
            let _ = not_after(&der[..i]);
            let _ = dns_names(&der[..i]);
            let _ = common_names(&der[..i]);
        }
    }

    #[test]
    fn reads_validity_and_dns_names() {
        let mut p =
            rcgen::CertificateParams::new(vec!["A.test".into(), "b.test".into()]).expect("params");
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        p.not_before = rcgen::date_time_ymd(2030, 1, 1);
        p.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let k = rcgen::KeyPair::generate().expect("key");
        let c = p.self_signed(&k).expect("cert");
        assert_eq!(dns_names(c.der()), ["a.test", "b.test"]);
        assert_eq!(
            common_names(c.der()),
            (
                Some("rcgen self signed cert".into()),
                Some("rcgen self signed cert".into())
            )
        );
        let (b, a) = validity(c.der()).expect("validity");
        assert_eq!(
            a.duration_since(b).ok(),
            Some(Duration::from_secs(30 * 86_400))
        );
    }
}
