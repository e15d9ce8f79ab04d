//! The `kiln` binary: everything is in the library's `cli` layer.

fn main() -> std::process::ExitCode {
    kiln::cli::main()
}
