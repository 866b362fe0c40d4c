//! deb822 control paragraphs (`Packages`, `Release`, `status`, a `.deb`'s
//! `control`): `Field: value` lines, continuation lines that start with a
//! space or tab, paragraphs separated by blank lines. Read whole or
//! streamed one paragraph at a time with a size bound.

use std::io::BufRead;

/// Paragraphs larger than this are refused (the largest in Debian's
/// archive are a few tens of KiB).
pub const MAX_PARAGRAPH: usize = 4 << 20;

/// Text that is not deb822.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Deb822Error {
    /// A line that is neither `Field: value`, a continuation nor blank.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A paragraph over [`MAX_PARAGRAPH`].
    #[error("line {line}: a paragraph is larger than {MAX_PARAGRAPH} bytes")]
    TooLarge {
        /// Where it was cut.
        line: usize,
    },
    /// The reader failed.
    #[error("reading: {0}")]
    Read(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// One paragraph: its fields in order, over the text as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paragraph {
    text: String,
    fields: Vec<Field>,
}

impl Paragraph {
    /// The value of a field (names compare without case), continuation
    /// lines included after `\n` with their leading white space; the first
    /// line's leading and every line's trailing white space trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| self.text[f.name.0..f.name.1].eq_ignore_ascii_case(name))
            .map(|f| &self.text[f.value.0..f.value.1])
    }

    /// Whether the paragraph has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields, in order: (name, value).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|f| {
            (
                &self.text[f.name.0..f.name.1],
                &self.text[f.value.0..f.value.1],
            )
        })
    }

    /// The paragraph as deb822 text, every line ending in `\n`.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for (name, value) in self.fields() {
            out.push_str(name);
            out.push(':');
            if !value.is_empty() && !value.starts_with('\n') {
                out.push(' ');
            }
            out.push_str(value);
            out.push('\n');
        }
        out
    }

    fn clear(&mut self) {
        self.text.clear();
        self.fields.clear();
    }

    /// Add one line (without its newline). `line` is for errors.
    fn push_line(&mut self, raw: &str, line: usize) -> Result<(), Deb822Error> {
        let l = raw.trim_end();
        if l.starts_with(' ') || l.starts_with('\t') {
            let Some(last) = self.fields.last_mut() else {
                return Err(Deb822Error::Syntax {
                    line,
                    reason: "a continuation line before any field".into(),
                });
            };
            // Keep the continuation's text contiguous with its field.
            debug_assert_eq!(last.value.1, self.text.len());
            self.text.push('\n');
            self.text.push_str(l);
            last.value.1 = self.text.len();
            return Ok(());
        }
        let Some((name, value)) = l.split_once(':') else {
            return Err(Deb822Error::Syntax {
                line,
                reason: format!("{:?} is not `Field: value`", truncate(l)),
            });
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Deb822Error::Syntax {
                line,
                reason: format!("{:?} is not a field name", truncate(name)),
            });
        }
        let start = self.text.len();
        if start > 0 {
            self.text.push('\n');
        }
        let n0 = self.text.len();
        self.text.push_str(name);
        let n1 = self.text.len();
        self.text.push(':');
        let value = value.trim_start();
        let v0 = self.text.len();
        self.text.push_str(value);
        self.fields.push(Field {
            name: (n0, n1),
            value: (v0, self.text.len()),
        });
        Ok(())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

fn is_comment(line: &str) -> bool {
    line.starts_with('#')
}

/// Every paragraph of a text. Blank (white-space only) lines separate
/// paragraphs; `#` comment lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Paragraph>, Deb822Error> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if is_comment(line) {
            continue;
        }
        cur.push_line(line, i + 1)?;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// The one paragraph of a text (a `control` file, a `Release`).
pub fn parse_one(text: &str) -> Result<Paragraph, Deb822Error> {
    let mut all = parse(text)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(Deb822Error::Syntax {
            line: 1,
            reason: "no paragraph".into(),
        }),
        n => Err(Deb822Error::Syntax {
            line: 1,
            reason: format!("{n} paragraphs where one was expected"),
        }),
    }
}

/// Paragraphs read one at a time from a stream, in bounded memory (one
/// paragraph and one line at a time). Invalid UTF-8 is replaced.
pub struct ParagraphReader<R> {
    reader: R,
    raw: Vec<u8>,
    current: Paragraph,
    line: usize,
}

impl<R: BufRead> ParagraphReader<R> {
    /// Read from `reader`.
    pub fn new(reader: R) -> Self {
        ParagraphReader {
            reader,
            raw: Vec::with_capacity(256),
            current: Paragraph::default(),
            line: 0,
        }
    }

    /// The next paragraph, or `None` at the end.
    pub fn next_paragraph(&mut self) -> Result<Option<&Paragraph>, Deb822Error> {
        self.current.clear();
        loop {
            self.raw.clear();
            let n = std::io::Read::take(&mut self.reader, MAX_PARAGRAPH as u64 + 1)
                .read_until(b'\n', &mut self.raw)
                .map_err(|e| Deb822Error::Read(e.to_string()))?;
            if n == 0 {
                break;
            }
            self.line += 1;
            let text = String::from_utf8_lossy(&self.raw);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                if self.current.is_empty() {
                    continue;
                }
                break;
            }
            if is_comment(text) {
                continue;
            }
            self.current.push_line(text, self.line)?;
            if self.current.text.len() > MAX_PARAGRAPH {
                return Err(Deb822Error::TooLarge { line: self.line });
            }
        }
        Ok((!self.current.is_empty()).then_some(&self.current))
    }
}

/// A field's value folded onto one line (white space runs → one space).
pub fn folded(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "Package: libssl3\nVersion: 3.0.20-1~deb12u2\nDepends: libc6 (>= 2.34),\n libfoo\nDescription: Secure Sockets Layer toolkit\n first line\n .\n second\n\n \t\nPackage: b\n# a comment\nversion: 1\n";

    #[test]
    fn paragraphs_split_on_blank_lines_and_fields_keep_their_continuations() {
        let ps = parse(TWO).unwrap();
        assert_eq!(ps.len(), 2);
        let a = &ps[0];
        assert_eq!(a.get("package"), Some("libssl3"));
        assert_eq!(a.get("Depends"), Some("libc6 (>= 2.34),\n libfoo"));
        assert_eq!(folded(a.get("depends").unwrap()), "libc6 (>= 2.34), libfoo");
        assert_eq!(
            a.get("Description"),
            Some("Secure Sockets Layer toolkit\n first line\n .\n second")
        );
        assert_eq!(ps[1].get("Version"), Some("1"));
        assert_eq!(ps[1].get("Missing"), None);
    }

    #[test]
    fn the_streaming_reader_gives_the_same_paragraphs_and_text_round_trips() {
        let whole = parse(TWO).unwrap();
        let mut r = ParagraphReader::new(TWO.as_bytes());
        let mut streamed = Vec::new();
        while let Some(p) = r.next_paragraph().unwrap() {
            streamed.push(p.clone());
        }
        assert_eq!(streamed, whole);
        let text = whole[0].to_text();
        assert_eq!(parse_one(&text).unwrap(), whole[0]);
        assert!(text.starts_with("Package: libssl3\nVersion: 3.0.20-1~deb12u2\n"));
    }

    #[test]
    fn a_line_without_a_colon_or_a_leading_continuation_is_an_error_with_its_line() {
        assert_eq!(
            parse("Package: a\nnot a field\n").unwrap_err(),
            Deb822Error::Syntax {
                line: 2,
                reason: "\"not a field\" is not `Field: value`".into()
            }
        );
        assert!(matches!(
            parse(" continued\n"),
            Err(Deb822Error::Syntax { line: 1, .. })
        ));
        assert!(parse_one("A: 1\n\nB: 2\n").is_err());
    }

    #[test]
    fn crlf_line_ends_and_empty_values_are_accepted() {
        let p = parse_one("A: 1\r\nB:\r\n x\r\n").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("\n x"));
    }
}
