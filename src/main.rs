fn main() -> std::process::ExitCode {
    miglock::run()
}
