//! One module per subcommand: orchestration only.
