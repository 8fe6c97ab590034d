//! Just enough DER to read a certificate's `notAfter` (sans-IO, bounds-checked).

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

/// `notAfter` of an X.509 certificate.
pub fn not_after(cert: &[u8]) -> Option<SystemTime> {
    let (_, _, tbs_outer) = tlv(cert, 0)?; // Certificate SEQUENCE
    let (_, _, mut p) = tlv(cert, tbs_outer)?; // TBSCertificate SEQUENCE
    if *cert.get(p)? == 0xa0 {
        p = tlv(cert, p)?.1; // [0] version
    }
    for _ in 0..3 {
        p = tlv(cert, p)?.1; // serial, signature algorithm, issuer
    }
    let (_, _, v) = tlv(cert, p)?; // Validity SEQUENCE
    let nb_end = tlv(cert, v)?.1;
    let (tag, end, start) = tlv(cert, nb_end)?;
    parse_time(tag, std::str::from_utf8(&cert[start..end]).ok()?)
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
        }
    }
}
