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
/// the process: loading and relocating it (its IFUNC resolvers run as it
/// loads) for that one symbol was 0.3-0.4 MB of a no-op run's 4.6 MB peak
/// RSS. The libm crate's `pow` is FreeBSD's (fdlibm's `e_pow.c`), within
/// about an ulp of glibc's, and sets no `errno`. The symbol is exported: a
/// library loaded later that calls `pow` gets this one (none of glibc's
/// NSS modules, libresolv or libgcc_s does).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn pow_gives_exact_results_exactly_and_others_within_an_ulp() {
        use super::pow;
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(2.0, 0.5), std::f64::consts::SQRT_2);
        assert_eq!(pow(0.1, 0.0), 1.0);
        assert_eq!(pow(10.0, -2.0), 0.01);
        assert_eq!(pow(2.0, -1074.0), 5e-324);
        assert!(pow(-1.0, 0.5).is_nan());
        // glibc's results (Python's `**`), correctly rounded.
        for (x, y, glibc) in [
            (1.5, 2.5, 2.7556759606310752),
            (0.9, 0.3, 0.9688861611972633),
            (1.0001, 10000.0, 2.7181459268249255),
        ] {
            let got: f64 = pow(x, y);
            assert!(
                (got - glibc).abs() <= glibc * f64::EPSILON,
                "{x}^{y}: {got} against {glibc}"
            );
        }
    }
}
