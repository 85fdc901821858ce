//! confab's entry point: parse the command line, run the command.

use std::process::ExitCode;

use clap::Parser;

// musl's allocator is slow under many threads (see ../shared/recipes/cross-build.md figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    confab::cli::run(confab::cli::Cli::parse())
}
