//! Progress for long work: bars on a TTY, a plain line every few seconds
//! otherwise (so CI logs read well), nothing with `-q`. Always on stderr;
//! stdout is kept for results (`--json`).
//!
//! On a terminal every line printed while bars are shown goes through the
//! bars' [`MultiProgress`] ([`Progress::say`]), and every bar is attached to
//! it before it can draw: a bar drawing itself, or a line written past the
//! bars, leaves stale and duplicated bars on the screen.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Animated bars (stderr is a terminal).
    Bars,
    /// A plain line per task every few seconds and when it ends.
    Lines,
    /// Nothing.
    Quiet,
}

/// The progress display of one command.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
    multi: Option<MultiProgress>,
    interval: Duration,
    /// Where [`Progress::say`] lines also go (tests, callers that log).
    sink: Option<Arc<Mutex<Vec<String>>>>,
}

impl Progress {
    /// Bars on a terminal, lines otherwise, nothing when `quiet`.
    pub fn detect(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Progress::new(mode)
    }

    /// A display in the given mode.
    pub fn new(mode: Mode) -> Progress {
        let multi = (mode == Mode::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            mode,
            multi,
            interval: Duration::from_secs(5),
            sink: None,
        }
    }

    /// No output, but every [`Progress::say`] line kept in the returned list.
    pub fn recording() -> (Progress, Arc<Mutex<Vec<String>>>) {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let mut p = Progress::new(Mode::Quiet);
        p.sink = Some(sink.clone());
        (p, sink)
    }

    /// No output at all (library use, tests).
    pub fn hidden() -> Progress {
        Progress::new(Mode::Quiet)
    }

    /// The mode in use.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A one-off status line (not shown with `-q`).
    pub fn say(&self, msg: impl AsRef<str>) {
        if let Some(s) = &self.sink {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(msg.as_ref().to_owned());
        }
        match (&self.multi, self.mode) {
            (Some(m), _) => {
                let _ = m.println(msg.as_ref());
            }
            (None, Mode::Lines) => eprintln!("{}", msg.as_ref()),
            _ => {}
        }
    }

    /// A task measured in bytes (`total` when known).
    pub fn task(&self, label: impl Into<String>, total: Option<u64>) -> Task {
        let label = label.into();
        let bar = self.multi.as_ref().map(|m| {
            // Hidden until the MultiProgress owns it: `ProgressBar::new`
            // would draw on stderr by itself at the first `set_prefix`,
            // past the bars, and that line stays on screen for good.
            let b = m.add(ProgressBar::with_draw_target(
                total,
                ProgressDrawTarget::hidden(),
            ));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>24} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix(label.clone());
            b
        });
        Task {
            inner: Arc::new(TaskInner {
                label,
                total: AtomicU64::new(total.unwrap_or(0)),
                done: AtomicU64::new(0),
                bar,
                lines: self.mode == Mode::Lines,
                started: Instant::now(),
                last_line: Mutex::new(Instant::now()),
                interval: self.interval,
            }),
        }
    }
}

/// One piece of long work; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Task {
    inner: Arc<TaskInner>,
}

struct TaskInner {
    label: String,
    total: AtomicU64,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    lines: bool,
    started: Instant,
    last_line: Mutex<Instant>,
    interval: Duration,
}

impl Task {
    /// `n` more bytes done.
    pub fn inc(&self, n: u64) {
        let i = &self.inner;
        let done = i.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &i.bar {
            b.inc(n);
        } else if i.lines {
            let mut last = i.last_line.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= i.interval {
                *last = Instant::now();
                eprintln!(
                    "{}: {}",
                    i.label,
                    amount(done, i.total.load(Ordering::Relaxed))
                );
            }
        }
    }

    /// Go back to `done` bytes (an upload resumed from an earlier offset).
    pub fn set_position(&self, done: u64) {
        self.inner.done.store(done, Ordering::Relaxed);
        if let Some(b) = &self.inner.bar {
            b.set_position(done);
        }
    }

    /// The task is over; `outcome` is a short word (`done`, `exists`, `mounted`).
    pub fn finish(&self, outcome: &str) {
        let i = &self.inner;
        if let Some(b) = &i.bar {
            b.finish_with_message(outcome.to_owned());
        } else if i.lines {
            let bytes = i
                .done
                .load(Ordering::Relaxed)
                .max(i.total.load(Ordering::Relaxed));
            let secs = i.started.elapsed().as_secs_f64();
            if bytes == 0 {
                eprintln!("{}: {outcome} ({secs:.1}s)", i.label);
            } else {
                eprintln!(
                    "{}: {outcome} ({}, {secs:.1}s)",
                    i.label,
                    human_bytes(bytes)
                );
            }
        }
    }
}

fn amount(done: u64, total: u64) -> String {
    if total > 0 {
        format!(
            "{} / {} ({}%)",
            human_bytes(done),
            human_bytes(total),
            done * 100 / total.max(1)
        )
    } else {
        human_bytes(done)
    }
}

/// `12.3 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_like_sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(61_234_567), "61.2 MB");
    }
}
