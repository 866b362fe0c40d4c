//! The `.rel` file of a release: a single Erlang term naming the release, its
//! ERTS and its applications. A small parser for just the term shapes
//! `.rel` files use (tuples, lists, atoms, strings, integers, comments).

/// An Erlang term, as far as `.rel` files need.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Atom(String),
    Str(String),
    Int(i64),
    Tuple(Vec<Term>),
    List(Vec<Term>),
}

/// What a `.rel` file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RelFile {
    pub name: String,
    pub version: String,
    pub erts_version: String,
    /// (application, version, start type) in file order.
    pub apps: Vec<(String, String, Option<String>)>,
}

/// Parse `{release,{Name,Vsn},{erts,EVsn},[{App,Vsn}|{App,Vsn,Type}|{App,Vsn,Type,Incl}|{App,Vsn,Incl}]}.`
pub(crate) fn parse(text: &str) -> Result<RelFile, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let term = p.term()?;
    p.skip_blank();
    if p.peek() != Some(b'.') {
        return Err(p.error("expected `.` after the release term"));
    }
    p.i += 1;
    p.skip_blank();
    if p.i != p.s.len() {
        return Err(p.error("unexpected text after the release term"));
    }
    interpret(term)
}

fn interpret(term: Term) -> Result<RelFile, String> {
    let Term::Tuple(parts) = term else {
        return Err("the term is not a {release, …} tuple".into());
    };
    let [tag, name_vsn, erts, apps] = <[Term; 4]>::try_from(parts)
        .map_err(|_| "the release tuple does not have 4 elements".to_string())?;
    if tag != Term::Atom("release".into()) {
        return Err("the term does not start with `release`".into());
    }
    let (name, version) = match name_vsn {
        Term::Tuple(v) => match v.as_slice() {
            [Term::Str(n), Term::Str(v)] => (n.clone(), v.clone()),
            _ => return Err("the release name is not {\"Name\", \"Vsn\"}".into()),
        },
        _ => return Err("the release name is not {\"Name\", \"Vsn\"}".into()),
    };
    let erts_version = match erts {
        Term::Tuple(v) => match v.as_slice() {
            [Term::Atom(a), Term::Str(v)] if a == "erts" => v.clone(),
            _ => return Err("the ERTS entry is not {erts, \"Vsn\"}".into()),
        },
        _ => return Err("the ERTS entry is not {erts, \"Vsn\"}".into()),
    };
    let Term::List(app_terms) = apps else {
        return Err("the applications are not a list".into());
    };
    let mut apps = Vec::with_capacity(app_terms.len());
    for t in app_terms {
        let bad = || format!("application entry {t:?} is not {{App, \"Vsn\", …}}");
        let Term::Tuple(v) = &t else {
            return Err(bad());
        };
        match v.as_slice() {
            [Term::Atom(a), Term::Str(vsn), rest @ ..] if rest.len() <= 2 => {
                let start = match rest.first() {
                    Some(Term::Atom(s)) => Some(s.clone()),
                    Some(Term::List(_)) | None => None,
                    Some(_) => return Err(bad()),
                };
                apps.push((a.clone(), vsn.clone(), start));
            }
            _ => return Err(bad()),
        }
    }
    Ok(RelFile {
        name,
        version,
        erts_version,
        apps,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn error(&self, what: &str) -> String {
        let line = self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        format!("{what} (line {line})")
    }

    fn skip_blank(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() {
                self.i += 1;
            } else if b == b'%' {
                while self.peek().is_some_and(|b| b != b'\n') {
                    self.i += 1;
                }
            } else {
                break;
            }
        }
    }

    fn term(&mut self) -> Result<Term, String> {
        self.skip_blank();
        match self.peek() {
            Some(b'{') => self.seq(b'}').map(Term::Tuple),
            Some(b'[') => self.seq(b']').map(Term::List),
            Some(b'"') => self.quoted(b'"').map(Term::Str),
            Some(b'\'') => self.quoted(b'\'').map(Term::Atom),
            Some(b) if b.is_ascii_lowercase() => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'@')
                {
                    self.i += 1;
                }
                Ok(Term::Atom(
                    String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
                ))
            }
            Some(b) if b.is_ascii_digit() || b == b'-' => {
                let start = self.i;
                self.i += 1;
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Term::Int)
                    .ok_or_else(|| self.error("bad integer"))
            }
            Some(_) => Err(self.error("unexpected character")),
            None => Err(self.error("unexpected end of file")),
        }
    }

    /// `{a, b}` or `[a, b]`, the opening bracket at the cursor.
    fn seq(&mut self, close: u8) -> Result<Vec<Term>, String> {
        self.i += 1;
        let mut items = Vec::new();
        self.skip_blank();
        if self.peek() == Some(close) {
            self.i += 1;
            return Ok(items);
        }
        loop {
            items.push(self.term()?);
            self.skip_blank();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(items);
                }
                _ => return Err(self.error("expected `,` or a closing bracket")),
            }
        }
    }

    fn quoted(&mut self, quote: u8) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b) if b == quote => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    out.push(match c {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                    self.i += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_generated_rel_file_parses_with_start_types() {
        let text = r#"%% coding: utf-8
{release,{"guildhall","0.1.0"},
         {erts,"13.1.5"},
         [{kernel,"8.5.3",permanent},
          {stdlib,"4.2",permanent},
          {iex,"1.14.0",none},
          {crypto,"5.1.2"},
          {guildhall,"0.1.0",permanent,[inc_app]},
          {inc_app,"1.0",load}]}.
"#;
        let rel = parse(text).unwrap();
        assert_eq!(rel.name, "guildhall");
        assert_eq!(rel.version, "0.1.0");
        assert_eq!(rel.erts_version, "13.1.5");
        assert_eq!(rel.apps.len(), 6);
        assert_eq!(
            rel.apps[2],
            ("iex".into(), "1.14.0".into(), Some("none".into()))
        );
        assert_eq!(rel.apps[3], ("crypto".into(), "5.1.2".into(), None));
        assert_eq!(rel.apps[4].2.as_deref(), Some("permanent"));
    }

    #[test]
    fn quoted_atoms_and_escapes_are_understood() {
        let rel = parse(r#"{release,{"a\"b","1"},{erts,"14.0"},[{'my-app',"1.0"}]}."#).unwrap();
        assert_eq!(rel.name, "a\"b");
        assert_eq!(rel.apps[0].0, "my-app");
    }

    #[test]
    fn truncated_or_misshapen_rel_files_are_rejected_with_a_reason() {
        assert!(parse(r#"{release,{"a","1"},{erts,"14.0"},[{kernel,"8.5"}"#).is_err());
        assert!(parse(r#"{release,{"a","1"},{erts,"14.0"}}."#).is_err());
        assert!(parse(r#"{release,{"a","1"},{erts,"14.0"},[kernel]}."#).is_err());
        assert!(parse(r#"{release,{"a","1"},{erts,"14.0"},[]}. junk"#).is_err());
    }
}
