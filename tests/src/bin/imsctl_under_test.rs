//! `imsctl` itself, built inside the test package so that end-to-end tests can run it through
//! `CARGO_BIN_EXE_imsctl-under-test`.

// The system allocator, as `imsctl` (see crates/ims-cli/src/bin/imsctl.rs).

fn main() -> std::process::ExitCode {
    ims_cli::imsctl::main()
}
