fn main() -> std::process::ExitCode {
    // One malloc arena: glibc gives each new thread its own (the connection
    // and file-reading threads), and their pages are a twentieth of a
    // no-op run's memory. miglock allocates too little for contention.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any other thread exists; mallopt only tunes malloc.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    miglock::run()
}
