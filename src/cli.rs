//! Command line: `vane [run] [--config DIR]`, `vane check [--config DIR] [--format
//! text|json]`, `vane convert --to FORMAT --out DIR [--config DIR]`, `vane --version`.

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: Option<String>,
    },
    Check {
        config: Option<String>,
        json: bool,
    },
    /// Writes the config dir anew in another format.
    Convert {
        config: Option<String>,
        to: String,
        out: String,
    },
    Version,
    Help,
}

pub const USAGE: &str = "usage: vane [run|check] [--config DIR] [--format text|json (check)]
       vane convert --to toml|yaml|json|ron --out NEW_DIR [--config DIR]
       vane --version";

/// A command line that cannot be understood.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("--config needs a directory")]
    MissingDir,
    #[error("unexpected argument `{0}`")]
    Unexpected(String),
    #[error("--format takes `text` or `json`")]
    BadFormat,
    #[error("convert needs --to toml|yaml|json|ron and --out NEW_DIR")]
    Convert,
}

/// Parses arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let mut cmd = None;
    let mut config = None;
    let mut json = None;
    let (mut to, mut out) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-v" | "-V" | "--version" | "version" => return Ok(Command::Version),
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "--config" | "-c" => config = Some(it.next().ok_or(CliError::MissingDir)?.clone()),
            s if s.starts_with("--config=") => config = Some(s["--config=".len()..].to_string()),
            "--format" => json = Some(format(it.next().map(String::as_str))?),
            s if s.starts_with("--format=") => json = Some(format(Some(&s["--format=".len()..]))?),
            "--to" => to = Some(it.next().ok_or(CliError::Convert)?.clone()),
            "--out" => out = Some(it.next().ok_or(CliError::Convert)?.clone()),
            "run" | "check" | "convert" if cmd.is_none() => cmd = Some(a.clone()),
            other => return Err(CliError::Unexpected(other.to_string())),
        }
    }
    Ok(match cmd.as_deref() {
        Some("check") => Command::Check {
            config,
            json: json.unwrap_or(false),
        },
        Some("convert") => match (to, out) {
            (Some(to), Some(out)) => Command::Convert { config, to, out },
            _ => return Err(CliError::Convert),
        },
        _ if json.is_some() => return Err(CliError::Unexpected("--format".into())),
        _ if to.is_some() || out.is_some() => return Err(CliError::Convert),
        _ => Command::Run { config },
    })
}

/// `--format`'s value: whether it asks for JSON.
fn format(v: Option<&str>) -> Result<bool, CliError> {
    match v {
        Some("json") => Ok(true),
        Some("text") => Ok(false),
        _ => Err(CliError::BadFormat),
    }
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
                config: Some("/x".into()),
                json: false
            })
        );
        assert_eq!(
            p(&["check", "--format", "json"]),
            Ok(Command::Check {
                config: None,
                json: true
            })
        );
        assert_eq!(p(&["check", "--format", "xml"]), Err(CliError::BadFormat));
        assert_eq!(
            p(&["convert", "--to", "toml", "--out", "/n"]),
            Ok(Command::Convert {
                config: None,
                to: "toml".into(),
                out: "/n".into()
            })
        );
        assert_eq!(p(&["convert", "--to", "toml"]), Err(CliError::Convert));
        assert_eq!(
            p(&["run", "--format=json"]),
            Err(CliError::Unexpected("--format".into()))
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
