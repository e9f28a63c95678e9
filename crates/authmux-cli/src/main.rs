//! The `authmux` binary; everything but the runtime lives in the library.

use std::process::ExitCode;

use clap::Parser;

// One thread: a command sends a few requests, one after the other.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Parse errors exit here, with clap's own code 2.
    let cli = authmux_cli::Cli::parse();
    authmux_cli::init_logging(&cli);
    // stderr is not held locked: log events from other threads (the DNS
    // resolver's, with RUST_LOG=debug) must be able to write too.
    authmux_cli::run(cli, std::io::stdout().lock(), std::io::stderr())
        .await
        .into()
}
