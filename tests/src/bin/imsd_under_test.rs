//! `imsd` itself, built inside the test package so that end-to-end tests can start it as a child
//! process (and kill it) through `CARGO_BIN_EXE_imsd-under-test`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ims_cli::imsd::main()
}
