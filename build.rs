//! Build facts for `GET /system` (Vane 0.9.2's `build` block): the compiler and cargo that
//! built this binary, the commit, and when. Missing tools or a tree without git give
//! `unknown`, never a failed build.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let unknown = || "unknown".to_string();
    println!(
        "cargo:rustc-env=VANE_BUILD_RUSTC={}",
        output(&rustc, &["--version"]).unwrap_or_else(unknown)
    );
    println!(
        "cargo:rustc-env=VANE_BUILD_CARGO={}",
        output(&cargo, &["--version"]).unwrap_or_else(unknown)
    );
    println!(
        "cargo:rustc-env=VANE_BUILD_COMMIT={}",
        output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(unknown)
    );
    // Reproducible builds set SOURCE_DATE_EPOCH; otherwise the time of this build.
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default()
    });
    println!("cargo:rustc-env=VANE_BUILD_EPOCH={epoch}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}
