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

/// C's `pow`, for the binary's one caller of libm (indicatif's rate
/// estimates, through `f64::powf`). Defined here, it keeps libm.so out of
/// the process: loaded for that one symbol, whose resolver runs at start-up
/// (the binary binds every symbol then), libm was 0.3 MB of a no-op run's
/// 4.6 MB peak RSS. libm crate's `pow` is musl's, as exact as glibc's to
/// within an ulp; nothing else in the process calls `pow`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn pow_gives_the_correctly_rounded_values() {
        assert_eq!(super::pow(2.0, 10.0), 1024.0);
        assert_eq!(super::pow(2.0, 0.5), std::f64::consts::SQRT_2);
        assert_eq!(super::pow(0.1, 0.0), 1.0);
        assert!(super::pow(-1.0, 0.5).is_nan());
    }
}
