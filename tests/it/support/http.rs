//! The bare HTTP/1.1 both in-process doubles speak: a request head read off
//! a connection, query parameters, reason phrases. (Enough of HTTP for a
//! registry client, not a general server.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;

/// A request line and its headers (names lower-cased).
pub struct Head {
    /// `GET`, `PATCH`, …
    pub method: String,
    /// The path, as sent (no query).
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// Headers by lower-case name.
    pub headers: HashMap<String, String>,
}

/// Read a request head; `None` when the connection closed first.
pub fn read_head(r: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target, String::new()),
    };
    Some(Head {
        method,
        path,
        query,
        headers,
    })
}

/// A query parameter, decoded.
pub fn query_param(q: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The reason phrase of a status (the ones the doubles answer with).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        416 => "Requested Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        524 => "A Timeout Occurred",
        _ => "Whatever",
    }
}
