// imsctl runs mimalloc, as imsd does. It kept the system allocator while an offline audit's
// memory was mostly sled opening the log, where mimalloc peaked higher (on 10M events,
// who-could-use 483-550 MiB with it and 438 without). Since the log holds half the pages and
// sled's cache bounds what a scan holds, mimalloc is the smaller and the faster: on the 10M-event
// region, the whole offline `audit verify` 66.6 s and 417 MiB against 126.4 s and 535 MiB with
// the system allocator, and opening the log for who-could-use 48-67 ms against 73-79 ms
// (README, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ims_cli::imsctl::main()
}
