//! Results on standard output. A closed stdout (`guildhall-image inspect …
//! | head -1`) is not an error: further output is dropped and the command
//! ends quietly, as `ripgrep` and `git` do, instead of panicking.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Write one line on stdout (see [`crate::out!`]).
pub fn line(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    let r = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = r {
        // Any failure to write the result is the reader going away (EPIPE)
        // or a full disk behind a redirect; neither is worth a panic.
        if e.kind() != io::ErrorKind::BrokenPipe {
            tracing::warn!("writing to standard output: {e}");
        }
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Whether stdout was closed by its reader during the command.
pub fn stdout_closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// `println!` for results: a line on stdout that never panics.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::commands::output::line(format_args!($($arg)*))
    };
}
