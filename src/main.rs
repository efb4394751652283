//! The `popmaster` command: `serve`, and client commands that talk gRPC to a running server.

mod cli;

/// mimalloc instead of the system allocator: the write path, the reads and an index rebuild
/// allocate many small strings (values, features, terms), and glibc's malloc spent about a
/// quarter of a rebuild's time in its free lists. The `system-allocator` feature leaves the
/// system's, for heap profiling (`scripts/heap-profile.sh`).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
