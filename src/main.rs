//! The `popmaster` command: `serve`, and client commands that talk gRPC to a running server.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
