//! Command-line types (clap). Parsing only: no work happens here.
