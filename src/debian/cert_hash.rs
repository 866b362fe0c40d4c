//! OpenSSL's certificate subject hash (`X509_NAME_hash`, what `openssl
//! rehash` names `/etc/ssl/certs/HASH.0` after): SHA-1 of the subject
//! name's canonical DER form (string values as UTF-8, trimmed, inner white
//! space collapsed, ASCII lower-cased), its first four bytes read
//! little-endian. A small DER reader: no X.509 crate needed for one field.

use base64::Engine as _;
use sha2::Digest as _;

/// A DER element: (tag byte, header length, content).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers: not in certificates' names
    }
    let first = *der.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*der.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    let content = der.get(hdr..end)?;
    Some((tag, content, &der[end..]))
}

fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

const UTF8: u8 = 0x0c;
const PRINTABLE: u8 = 0x13;
const T61: u8 = 0x14;
const IA5: u8 = 0x16;
const UNIVERSAL: u8 = 0x1c;
const BMP: u8 = 0x1e;
const VISIBLE: u8 = 0x1a;

/// A string value in OpenSSL's canonical form, or `None` for types it
/// leaves alone.
fn canon_string(tag: u8, v: &[u8]) -> Option<Vec<u8>> {
    let utf8: Vec<u8> = match tag {
        UTF8 | PRINTABLE | IA5 | VISIBLE => v.to_vec(),
        T61 => v
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .into_bytes(),
        BMP => {
            let units: Vec<u16> = v
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units).into_bytes()
        }
        UNIVERSAL => v
            .chunks(4)
            .filter_map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(b))
            })
            .collect::<String>()
            .into_bytes(),
        _ => return None,
    };
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = utf8.iter().position(|&b| !space(b)).unwrap_or(utf8.len());
    let end = utf8
        .iter()
        .rposition(|&b| !space(b))
        .map_or(start, |i| i + 1);
    let mut out = Vec::with_capacity(end - start);
    let mut i = start;
    while i < end {
        let b = utf8[i];
        if !b.is_ascii() {
            out.push(b);
            i += 1;
        } else if space(b) {
            out.push(b' ');
            while i < end && space(utf8[i]) {
                i += 1;
            }
        } else {
            out.push(b.to_ascii_lowercase());
            i += 1;
        }
    }
    Some(out)
}

/// The canonical encoding of a Name (its SEQUENCE content): each RDN's SET
/// re-encoded with canonical values, concatenated without the outer
/// SEQUENCE.
fn canon_name(name_content: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = name_content;
    while !rest.is_empty() {
        let (tag, set, next) = tlv(rest)?;
        if tag != 0x31 {
            return None;
        }
        let mut entries = Vec::new();
        let mut r = set;
        while !r.is_empty() {
            let (t, atv, n) = tlv(r)?;
            if t != 0x30 {
                return None;
            }
            let (ot, oid, after) = tlv(atv)?;
            if ot != 0x06 {
                return None;
            }
            let (vt, value, _) = tlv(after)?;
            let mut e = encode(0x06, oid);
            match canon_string(vt, value) {
                Some(c) => e.extend(encode(UTF8, &c)),
                None => e.extend(encode(vt, value)),
            }
            entries.push(encode(0x30, &e));
            r = n;
        }
        // DER orders a SET OF by encoding.
        entries.sort();
        out.extend(encode(0x31, &entries.concat()));
        rest = next;
    }
    Some(out)
}

/// The subject Name (content of its SEQUENCE) of a DER certificate.
fn subject(der: &[u8]) -> Option<&[u8]> {
    let (t, cert, _) = tlv(der)?;
    if t != 0x30 {
        return None;
    }
    let (t, tbs, _) = tlv(cert)?;
    if t != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (t, _, next) = tlv(rest)?;
    if t == 0xa0 {
        rest = next; // [0] version
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (t, name, _) = tlv(rest)?;
    (t == 0x30).then_some(name)
}

/// The DER bytes of every `CERTIFICATE` block of a PEM text.
pub(crate) fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + 27..];
        let Some(end) = body.find("-----END CERTIFICATE-----") else {
            break;
        };
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[end..];
    }
    out
}

/// `X509_NAME_hash` of a DER certificate's subject, or `None` when it does
/// not parse.
pub(crate) fn subject_hash(der: &[u8]) -> Option<u32> {
    let canon = canon_name(subject(der)?)?;
    let md = sha1_of(&canon);
    Some(u32::from_le_bytes([md[0], md[1], md[2], md[3]]))
}

/// SHA-1 (the hash OpenSSL names certificates by; not used for trust).
fn sha1_of(data: &[u8]) -> [u8; 20] {
    sha1::Sha1::digest(data).into()
}

/// A fingerprint to tell identical certificates apart (as rehash does).
pub(crate) fn fingerprint(der: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(der).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_strings_trim_collapse_and_lower_case_ascii_only() {
        assert_eq!(
            canon_string(PRINTABLE, b"  Foo   Bar CA ").unwrap(),
            b"foo bar ca"
        );
        assert_eq!(
            canon_string(UTF8, "Ünï  ÇODE".as_bytes()).unwrap(),
            "Ünï Çode".as_bytes()
        );
        assert_eq!(
            canon_string(BMP, &[0, b'A', 0, b' ', 0, b'b']).unwrap(),
            b"a b"
        );
        assert_eq!(canon_string(T61, &[0xe9, b'X']).unwrap(), "éx".as_bytes());
        assert!(canon_string(0x12, b"123").is_none());
    }

    #[test]
    fn der_lengths_round_trip_in_short_and_long_form() {
        for n in [0usize, 5, 127, 128, 300, 70_000] {
            let e = encode(0x04, &vec![7u8; n]);
            let (t, c, rest) = tlv(&e).unwrap();
            assert_eq!((t, c.len(), rest.len()), (0x04, n, 0));
        }
        assert!(tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(tlv(&[0x30, 0x05, 1]).is_none());
    }
}
