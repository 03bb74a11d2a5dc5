// imsctl keeps the system allocator (imsd runs mimalloc): an offline audit's memory is mostly
// sled opening the log, where mimalloc peaks higher. On a region of 10M events who-could-use,
// history and as-of peak at 483-550 MiB with it and at 438 MiB without: that decides whether an
// audit fits in 512 MiB (README, "Performance").

fn main() -> std::process::ExitCode {
    ims_cli::imsctl::main()
}
