// imsctl keeps the system allocator (imsd runs mimalloc): an offline audit's memory is mostly
// sled opening the log, where mimalloc peaks higher. On a region of 10M events who-could-use,
// history and as-of peak at 483-550 MiB with it and at 438 MiB without: that decides whether an
// audit fits in 512 MiB (README, "Performance"). Measured again once mimalloc stopped asking for
// transparent huge pages, on 1M events: `audit verify` 10.4 s and 218-227 MiB with mimalloc,
// 14.2-14.4 s and 190 MiB without; still the memory that decides.

fn main() -> std::process::ExitCode {
    ims_cli::imsctl::main()
}
