//! confab's entry point: parse the command line, run the command.

use std::process::ExitCode;

use clap::Parser;

// musl's allocator is slow under many threads (see ../shared/recipes/cross-build.md figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    confab::cli::run(confab::cli::Cli::parse())
}

/// Keeps idle memory small: with transparent huge pages, the first touch of any 4 KiB in
/// mimalloc's (1 GiB, reserved) arena faults in a whole 2 MiB page, so ~2 MiB of real heap
/// spread over a dozen threads showed as ~42 MiB of RSS (docs/performance.md, Memory). The
/// `no_thp` feature (Cargo.toml) stops mimalloc from asking for huge pages (`MADV_HUGEPAGE`,
/// which a kernel in THP `madvise` mode, Debian's default, honours); this also covers kernels in
/// THP `always` mode. Process-wide, inherited by children; failure (old kernel) only costs memory.
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
