//! Command line, defined once with clap (the help, the shell completions and the man page are
//! generated from it): `vane [run [--lenient]] [--config DIR]`, `vane check [--config DIR]
//! [--format text|json] [--compat]`, `vane convert --to FORMAT --out DIR [--config DIR]`, `vane completions SHELL`,
//! `vane man`, `vane --version`.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: Option<String>,
        /// Start without the files that fail to load (0.9.2's start), logging each.
        lenient: bool,
    },
    Check {
        config: Option<String>,
        json: bool,
        /// Also report the deliberate differences from Vane 0.9.2 this config meets.
        compat: bool,
    },
    /// Writes the config dir anew in another format.
    Convert {
        config: Option<String>,
        to: String,
        out: String,
    },
    /// Prints a completion script for `shell`.
    Completions {
        shell: clap_complete::Shell,
    },
    /// Prints the man page (roff).
    Man,
    Version,
}

/// Vane: a flow-based reverse proxy for TCP, UDP, TLS, QUIC and HTTP/1.1, HTTP/2, HTTP/3.
#[derive(Debug, Parser)]
#[command(name = "vane", version, disable_version_flag = true)]
struct Cli {
    /// Print the version.
    #[arg(short = 'V', long = "version", short_alias = 'v')]
    version: bool,
    #[command(flatten)]
    dir: ConfigArg,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The config dir (else CONFIG_DIR, else ./config when it exists, else /etc/vane).
    #[arg(short, long, value_name = "DIR", global = true)]
    config: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DocFormat {
    Toml,
    Yaml,
    Json,
    Ron,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Run the gateway in the foreground until SIGINT/SIGTERM (drains, exits 0).
    Run {
        /// Start without the files that fail to load, logging each (Vane 0.9.2's start);
        /// by default an invalid config dir does not start.
        #[arg(long)]
        lenient: bool,
    },
    /// Load and validate the config dir without binding anything; exit 0 when valid, 1 when not.
    Check {
        /// `text`: `FILE: path: message` lines; `json`: one document (ok, counts, problems).
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Also list the deliberate differences from Vane 0.9.2 this config dir meets, with
        /// the switch that restores 0.9.2's behaviour (docs/migration.md).
        #[arg(long)]
        compat: bool,
    },
    /// Write the config dir anew in another format (nothing is written unless all converts).
    Convert {
        /// The format to write.
        #[arg(long, value_enum)]
        to: DocFormat,
        /// A new (or empty) directory for the result.
        #[arg(long, value_name = "DIR")]
        out: String,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; `vane man | man -l -`).
    Man,
    /// Print the version.
    #[command(hide = true)]
    Version,
}

/// A command line that cannot be understood (clap's message, with usage), or a request for
/// help.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
pub struct CliError {
    text: String,
    help: bool,
}

impl CliError {
    /// `--help` is not an error: it prints to stdout and exits 0.
    pub fn is_help(&self) -> bool {
        self.help
    }
}

/// Parses arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let cli = Cli::try_parse_from(std::iter::once("vane".to_string()).chain(args.iter().cloned()))
        .map_err(|e| CliError {
            help: matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ),
            text: e.render().to_string(),
        })?;
    if cli.version {
        return Ok(Command::Version);
    }
    let config = cli.dir.config;
    Ok(match cli.command {
        None => Command::Run {
            config,
            lenient: false,
        },
        Some(Sub::Run { lenient }) => Command::Run { config, lenient },
        Some(Sub::Check { format, compat }) => Command::Check {
            config,
            json: format == Format::Json,
            compat,
        },
        Some(Sub::Convert { to, out }) => Command::Convert {
            config,
            to: format!("{to:?}").to_ascii_lowercase(),
            out,
        },
        Some(Sub::Completions { shell }) => Command::Completions { shell },
        Some(Sub::Man) => Command::Man,
        Some(Sub::Version) => Command::Version,
    })
}

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "vane", out);
}

/// Writes the man page.
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Command, CliError> {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn commands() {
        assert_eq!(
            p(&[]).ok(),
            Some(Command::Run {
                config: None,
                lenient: false
            })
        );
        assert_eq!(
            p(&["run", "--lenient"]).ok(),
            Some(Command::Run {
                config: None,
                lenient: true
            })
        );
        assert_eq!(
            p(&["check", "--config", "/x"]).ok(),
            Some(Command::Check {
                config: Some("/x".into()),
                json: false,
                compat: false
            })
        );
        assert_eq!(
            p(&["--config", "/x", "check", "--format", "json", "--compat"]).ok(),
            Some(Command::Check {
                config: Some("/x".into()),
                json: true,
                compat: true
            })
        );
        assert!(p(&["check", "--format", "xml"]).is_err());
        assert_eq!(
            p(&["run", "--config=/y"]).ok(),
            Some(Command::Run {
                config: Some("/y".into()),
                lenient: false
            })
        );
        assert_eq!(
            p(&["convert", "--to", "toml", "--out", "/n"]).ok(),
            Some(Command::Convert {
                config: None,
                to: "toml".into(),
                out: "/n".into()
            })
        );
        assert!(p(&["convert", "--to", "toml"]).is_err());
        assert!(p(&["convert", "--to", "xml", "--out", "/n"]).is_err());
        for v in ["--version", "-V", "-v", "version"] {
            assert_eq!(p(&[v]).ok(), Some(Command::Version), "{v}");
        }
        assert!(p(&["bogus"]).is_err());
        assert!(p(&["--config"]).is_err());
        assert!(p(&["--help"]).is_err_and(|e| e.is_help()));
    }
}
