//! A service that migrates at start-up, in-process, under the same lock as
//! `miglock apply`: replicas running the binary and replicas embedding the
//! library take turns on one key and share one history.
//!
//! ```sh
//! ./examples/demo.sh --keep     # or any database: DATABASE_URL=postgres://…
//! DATABASE_URL=… cargo run --example embedded -- migrations
//! ```

use std::process::ExitCode;
use std::time::Duration;

use miglock::{Migrated, Migrator};

fn main() -> ExitCode {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("set DATABASE_URL to the database to migrate");
        return ExitCode::from(2);
    };
    let migrations = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "migrations".into());
    let result = Migrator::new(url)
        .migrations(&migrations)
        .wait(Duration::from_secs(30))
        .instance("embedded-example")
        .apply();
    match result {
        Ok(Migrated::Applied(applied)) => {
            for m in &applied {
                println!(
                    "applied V{}__{} in {} ms",
                    m.version,
                    m.name,
                    m.duration.as_millis()
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Migrated::Current) => {
            println!("the schema is current: nothing to apply from {migrations}");
            ExitCode::SUCCESS
        }
        Ok(Migrated::Skipped) => {
            println!(
                "another replica held the lock for the whole wait; starting on the schema as it is"
            );
            ExitCode::from(3)
        }
        // Outcomes a later release may add.
        Ok(other) => {
            println!("{other:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The message, then the causes behind it.
            let mut message = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                message.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("migrations failed: {message}");
            ExitCode::from(e.exit_code())
        }
    }
}
