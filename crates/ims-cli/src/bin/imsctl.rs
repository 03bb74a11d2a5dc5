fn main() -> std::process::ExitCode {
    ims_cli::imsctl::main()
}
