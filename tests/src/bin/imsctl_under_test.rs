//! `imsctl` itself, built inside the test package so that end-to-end tests can run it through
//! `CARGO_BIN_EXE_imsctl-under-test`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ims_cli::imsctl::main()
}
