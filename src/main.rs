//! The `guildhall-image` binary: parse the command line, run the command,
//! print the error chain and exit with the documented code.

use clap::Parser;
use guildhall_image::cli::Cli;
use guildhall_image::error::ExitCode;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Failure as u8);
        }
    };
    match runtime.block_on(guildhall_image::commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            // Causes a message already quotes (an OS error ending the line
            // above) are not repeated; transparent wrappers repeat their
            // inner error's message, so equal lines are skipped too.
            let mut said = err.to_string();
            let mut cause = std::error::Error::source(&err);
            while let Some(c) = cause {
                let text = c.to_string();
                if !said.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                said = text;
                cause = c.source();
            }
            std::process::ExitCode::from(err.exit_code() as u8)
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, filter::Targets};
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "guildhall_image=debug,warn",
        (false, _) => "guildhall_image=trace,info",
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time();
    // `GUILDHALL_IMAGE_LOG` takes EnvFilter's full syntax; the defaults are
    // plain targets, which parse without compiling EnvFilter's regexes (a
    // measurable part of a warm build).
    match std::env::var("GUILDHALL_IMAGE_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
    {
        Some(filter) => tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init(),
        None => tracing_subscriber::registry()
            .with(fmt.with_filter(default.parse::<Targets>().expect("a valid filter")))
            .init(),
    }
}
