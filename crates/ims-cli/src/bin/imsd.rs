fn main() -> std::process::ExitCode {
    ims_cli::imsd::main()
}
