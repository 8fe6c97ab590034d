//! Command line: `vane [run] [--config DIR]`, `vane check [--config DIR]`, `vane --version`.

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run { config: Option<String> },
    Check { config: Option<String> },
    Version,
    Help,
}

pub const USAGE: &str = "usage: vane [run|check] [--config DIR] | vane --version";

/// Parses arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut cmd = None;
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-v" | "-V" | "--version" | "version" => return Ok(Command::Version),
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--config" | "-c" => {
                config = Some(it.next().ok_or("--config needs a directory")?.clone())
            }
            s if s.starts_with("--config=") => config = Some(s["--config=".len()..].to_string()),
            "run" | "check" if cmd.is_none() => cmd = Some(a.clone()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(match cmd.as_deref() {
        Some("check") => Command::Check { config },
        _ => Command::Run { config },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Command, String> {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn commands() {
        assert_eq!(p(&[]), Ok(Command::Run { config: None }));
        assert_eq!(
            p(&["check", "--config", "/x"]),
            Ok(Command::Check {
                config: Some("/x".into())
            })
        );
        assert_eq!(
            p(&["run", "--config=/y"]),
            Ok(Command::Run {
                config: Some("/y".into())
            })
        );
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        assert!(p(&["bogus"]).is_err());
        assert!(p(&["--config"]).is_err());
    }
}
