//! `WWW-Authenticate` challenges (RFC 7235): the schemes and parameters a
//! registry asks for, parsed leniently (quoted strings, commas, several
//! challenges in one header).

#[allow(unused_imports)]
use super::token::*;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};

/// One parsed challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// `basic` or `bearer` (lower-cased).
    pub scheme: String,
    /// Parameters, keys lower-cased.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub(super) fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Every challenge in the response's `WWW-Authenticate` headers.
pub(crate) fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect()
}

/// Parse `Bearer realm="…",service="…",scope="a b"` (several challenges
/// may share one header: `Basic realm="x", Bearer realm="y"`).
pub(crate) fn parse_www_authenticate(s: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=') {
            *i += 1;
        }
        s[start..*i].to_owned()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let name = token(&mut i);
        if name.is_empty() {
            i += 1;
            continue;
        }
        // A parameter `name=value` belongs to the current challenge; a bare
        // token starts a new one.
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Push whole UTF-8 characters.
                    let ch_len = utf8_len(b[i]);
                    v.push_str(&s[i..(i + ch_len).min(b.len())]);
                    i += ch_len;
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            if let Some(c) = out.last_mut() {
                c.params.push((name.to_ascii_lowercase(), value));
            }
        } else if j < b.len() && b[j] == b'=' {
            // token68 or junk before any scheme: skip it.
            i = j + 1;
            token(&mut i);
        } else {
            out.push(Challenge {
                scheme: name.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

pub(super) fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}
