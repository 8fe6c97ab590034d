//! The `vane` binary.

use vane::cli::{self, Command};

/// mimalloc (see `vane_sys::alloc` for why, and why not through the `mimalloc` crate).
#[global_allocator]
static ALLOC: vane_sys::alloc::Mimalloc = vane_sys::alloc::Mimalloc;

fn main() {
    // Before the runtime allocates; `MIMALLOC_ALLOW_THP` (read by mimalloc) keeps them.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        vane_sys::alloc::no_transparent_huge_pages();
    }
    vane::settings::load_dotenv(std::path::Path::new(".env"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) if e.is_help() => {
            print!("{e}");
            std::process::exit(0);
        }
        Err(e) => {
            eprint!("{e}");
            std::process::exit(2);
        }
    };
    let code = match cmd {
        Command::Version => {
            println!("vane {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Completions { shell } => {
            cli::completions(shell, &mut std::io::stdout());
            0
        }
        Command::Man => match cli::man(&mut std::io::stdout()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write the man page: {e}");
                1
            }
        },
        Command::Convert { config, to, out } => {
            let Some(format) = vane::config::format::Format::by_name(&to) else {
                eprintln!("--to takes toml, yaml, json or ron, not `{to}`");
                std::process::exit(2);
            };
            let dir = vane::settings::config_dir(config.as_deref());
            match vane::config::convert::convert(&dir, std::path::Path::new(&out), format) {
                Ok(done) => {
                    eprintln!(
                        "{}: {} document(s) written as {to} into {out}, {} other file(s) copied",
                        dir.display(),
                        done.documents,
                        done.copied
                    );
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("{}: not converted; nothing was written", dir.display());
                    1
                }
            }
        }
        Command::Check {
            config,
            json,
            compat,
        } => vane::boot::check(&vane::settings::config_dir(config.as_deref()), json, compat),
        Command::Run { config, lenient } => {
            let s = vane::settings::get();
            // Held for the whole run: dropping it flushes and stops trace export.
            let telemetry = vane::ops::logging::init(&s.log_level, s.log_json);
            let dir = vane::settings::config_dir(config.as_deref());
            vane::l4::shards::on_park(collect_when_idle);
            let code = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .on_thread_park(collect_when_idle)
                .build()
            {
                Ok(rt) => rt.block_on(vane::boot::run(&dir, lenient)),
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

/// Hands memory freed on this thread back to the OS once the thread goes idle. mimalloc keeps
/// a thread's freed pages (and frees other threads made into it) until that thread allocates
/// again, so the memory of a load spike (thousands of UDP sessions, say) would stay with
/// threads that then sit idle. Runs when a runtime thread parks, at most once a second per
/// thread, so a busy thread (which parks often) pays nothing measurable.
///
/// Only a runtime's worker threads park, and they live as long as the process (a blocking
/// pool's threads, which come and go, never do): so the first park is also where a thread's
/// cache of freed blocks is turned on (`vane_sys::alloc::cache_this_thread`).
fn collect_when_idle() {
    use std::cell::Cell;
    use std::sync::OnceLock;
    use vane::ticks::Ticks;
    static SECONDS: OnceLock<&'static Ticks> = OnceLock::new();
    thread_local! {
        /// The second (a tick of a shared clock) this thread last collected in: a park reads
        /// one counter, not the time.
        static LAST: Cell<Option<u64>> = const { Cell::new(None) };
    }
    let now = SECONDS
        .get_or_init(|| Ticks::every(std::time::Duration::from_secs(1)))
        .count();
    let last = LAST.replace(Some(now));
    if last.is_none() {
        vane_sys::alloc::cache_this_thread();
    }
    if last != Some(now) {
        vane_sys::alloc::collect();
    }
}
