fn main() -> std::process::ExitCode {
    vdi_gateway::cli::main()
}
