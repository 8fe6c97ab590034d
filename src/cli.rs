//! Command line: `vane [run] [--config DIR]`, `vane check [--config DIR]`, `vane --version`.

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run { config: Option<String> },
    Check { config: Option<String> },
    Version,
    Help,
}

pub const USAGE: &str = "usage: vane [run|check] [--config DIR] | vane --version";

/// A command line that cannot be understood.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("--config needs a directory")]
    MissingDir,
    #[error("unexpected argument `{0}`")]
    Unexpected(String),
}

/// Parses arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let mut cmd = None;
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-v" | "-V" | "--version" | "version" => return Ok(Command::Version),
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--config" | "-c" => config = Some(it.next().ok_or(CliError::MissingDir)?.clone()),
            s if s.starts_with("--config=") => config = Some(s["--config=".len()..].to_string()),
            "run" | "check" if cmd.is_none() => cmd = Some(a.clone()),
            other => return Err(CliError::Unexpected(other.to_string())),
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

    fn p(a: &[&str]) -> Result<Command, CliError> {
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
        assert_eq!(p(&["bogus"]), Err(CliError::Unexpected("bogus".into())));
        assert_eq!(p(&["--config"]), Err(CliError::MissingDir));
    }
}
