//! The `vane` binary.

use vane::cli::{self, Command};

/// mimalloc: per-thread free lists suit the many short-lived allocations of HTTP requests
/// (glibc's malloc spent ~12% of the L7 proxy path in malloc/free/consolidate).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    vane::settings::load_dotenv(std::path::Path::new(".env"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\n{}", cli::USAGE);
            std::process::exit(2);
        }
    };
    let code = match cmd {
        Command::Version => {
            println!("vane {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Help => {
            println!("{}", cli::USAGE);
            0
        }
        Command::Check { config } => {
            vane::boot::check(&vane::settings::config_dir(config.as_deref()))
        }
        Command::Run { config } => {
            let s = vane::settings::get();
            // Held for the whole run: dropping it flushes and stops trace export.
            let telemetry = vane::ops::logging::init(&s.log_level, s.log_json);
            let dir = vane::settings::config_dir(config.as_deref());
            let code = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(vane::boot::run(&dir)),
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    1
                }
            };
            drop(telemetry);
            code
        }
    };
    std::process::exit(code);
}
