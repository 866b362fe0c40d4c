//! Running an engine: its output streamed (plain progress on a pipe), the
//! last lines kept, the failing step named in the error.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use super::BuildkitError;
use super::command::Invocation;
use super::context::TAIL_LINES;

// -------------------------------------------------------------- running ---

/// Run an engine command, streaming its output to stderr (unless quiet) and
/// keeping the last lines; on failure, an error naming the failing step.
pub(crate) fn run_streamed(inv: &Invocation, what: &str, echo: bool) -> Result<(), BuildkitError> {
    let mut cmd = inv.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| BuildkitError::Spawn {
        program: inv.program.clone(),
        source,
    })?;
    let log = Arc::new(Mutex::new(StepLog::default()));
    let pump = |r: Box<dyn Read + Send>, log: Arc<Mutex<StepLog>>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_owned();
                if echo {
                    let mut e = io::stderr().lock();
                    let _ = writeln!(e, "{line}");
                }
                log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        })
    };
    let t1 = pump(Box::new(child.stdout.take().expect("piped")), log.clone());
    let t2 = pump(Box::new(child.stderr.take().expect("piped")), log.clone());
    let status = child.wait().map_err(|source| BuildkitError::Spawn {
        program: inv.program.clone(),
        source,
    })?;
    let _ = t1.join();
    let _ = t2.join();
    if status.success() {
        return Ok(());
    }
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    Err(BuildkitError::Failed {
        builder: what.to_owned(),
        step: log.failed_step(),
        status: status.to_string(),
        tail: log
            .tail
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// What BuildKit's plain progress says about its steps, and the last lines.
#[derive(Default)]
pub(super) struct StepLog {
    /// `#N` → `[stage i/n] INSTRUCTION`.
    steps: BTreeMap<String, String>,
    failed: Option<String>,
    summary: Option<String>,
    tail: std::collections::VecDeque<String>,
}

impl StepLog {
    pub(super) fn push(&mut self, line: String) {
        if let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) {
            if id.chars().all(|c| c.is_ascii_digit()) {
                if rest.starts_with('[') && !self.steps.contains_key(id) {
                    self.steps.insert(id.to_owned(), rest.to_owned());
                } else if rest.starts_with("ERROR") {
                    if let Some(s) = self.steps.get(id) {
                        self.failed.get_or_insert_with(|| s.clone());
                    }
                }
            }
        }
        // BuildKit's closing summary: ` > [builder 5/9] RUN mix compile:`.
        if let Some(s) = line.strip_prefix(" > [").and_then(|l| l.strip_suffix(':')) {
            self.summary.get_or_insert_with(|| format!("[{s}"));
        }
        // BuildKit repeats whole RUN scripts in its output; keep lines readable.
        let line = if line.chars().count() > 400 {
            format!("{}…", line.chars().take(400).collect::<String>())
        } else {
            line
        };
        self.tail.push_back(line);
        if self.tail.len() > TAIL_LINES {
            self.tail.pop_front();
        }
    }

    pub(super) fn failed_step(&self) -> Option<String> {
        let s = self.failed.clone().or_else(|| self.summary.clone())?;
        // `RUN --mount=… --mount=… mix compile` reads as `RUN mix compile`.
        let s: String = s
            .split_whitespace()
            .filter(|w| !w.starts_with("--mount="))
            .collect::<Vec<_>>()
            .join(" ");
        let short: String = s.chars().take(160).collect();
        Some(if short.len() < s.len() {
            format!("{short}…")
        } else {
            short
        })
    }
}
