//! `authmux check`: validate the config, list its clients and discover
//! the token endpoints of clients configured with an issuer.

use std::io::{self, Write};
use std::path::Path;

use authmux::Registry;
use clap::Args;
use serde::Serialize;

use crate::store::StoreStatus;
use crate::{Exit, fail, one_line};

pub(crate) const CHECK_EXAMPLES: &str = "\
Examples:
  authmux check
  authmux check --config deploy/authmux.toml || exit 1
  authmux check --json | jq '.clients[].name'

A client configured with an issuer shows the token endpoint discovered from
the issuer's metadata; a failed discovery is a problem (exit 4 when the
issuer cannot be reached, 2 when its metadata does not fit the config). The last line names
the token store and whether it can be reached. A store that cannot be
reached is reported but does not fail the check: tokens are then fetched
without it.";

/// The arguments of `authmux check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print one JSON object: the file read, the clients, and every problem.
    #[arg(long)]
    pub json: bool,
}

/// What `authmux check --json` prints. The field order is the output's.
#[derive(Debug, Default, Serialize)]
struct CheckJson<'a> {
    /// The config file read, if one was.
    file: Option<String>,
    /// The clients this build serves.
    clients: Vec<ClientJson<'a>>,
    /// The token store, once the config was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreStatus>,
    /// Every problem, one line each, as stderr would show them.
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ClientJson<'a> {
    name: &'a str,
    provider: &'a str,
    /// The token endpoint; for a client with an issuer, the discovered
    /// one (or the issuer, if discovery failed).
    token_url: String,
    /// The issuer the token endpoint was discovered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
}

/// `authmux check`. The outer error is a failure to write the output.
pub(crate) async fn check(
    config: Option<&Path>,
    no_store: bool,
    args: &CheckArgs,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    // Building the registry is the part that catches a missing secret
    // variable or a bad URL; it sends nothing.
    let built = crate::store::load(config, no_store)
        .and_then(|loaded| Registry::from_config(&loaded).map(|registry| (loaded, registry)));
    let (loaded, registry) = match built {
        Ok(built) => built,
        Err(error) => {
            let problems = error.problems().iter().map(Problem::config).collect();
            return report(args, CheckJson::default(), problems, stdout, stderr);
        }
    };
    let mut problems: Vec<Problem> = Vec::new();
    if registry.is_empty() && registry.unavailable().next().is_none() {
        // A file was read (a missing one is an error that names the paths
        // tried), but a check that passes on no client would hide a mistake.
        problems.push(Problem::config(match loaded.file() {
            Some(file) => format!("no clients configured in {}", file.display()),
            None => "no clients configured".to_owned(),
        }));
    }
    // A client this build cannot serve is reported for itself; the others
    // are listed.
    for (name, error) in registry.unavailable() {
        problems.push(Problem::config(format!(
            "clients.{name}.provider: {}",
            error.message()
        )));
    }
    // Clients configured with an issuer read its metadata now: the one
    // network request of a check besides the store's.
    let mut clients = Vec::new();
    for client in registry.clients() {
        let token_url = match client.token_endpoint().await {
            Ok(token_url) => token_url,
            Err(error) => {
                problems.push(Problem {
                    exit: Exit::for_kind(error.kind()),
                    message: error.to_string(),
                });
                client.token_url().to_owned()
            }
        };
        clients.push(ClientJson {
            name: client.name(),
            provider: client.provider(),
            token_url,
            issuer: client.issuer(),
        });
    }
    let found = CheckJson {
        file: loaded.file().map(|file| file.display().to_string()),
        clients,
        store: Some(crate::store::status(&registry).await),
        problems: Vec::new(),
    };
    report(args, found, problems, stdout, stderr)
}

/// One problem `check` found, and how it alone would end the run.
struct Problem {
    message: String,
    exit: Exit,
}

impl Problem {
    /// A problem of the config itself.
    fn config(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit: Exit::Usage,
        }
    }
}

/// How a check with these problems ends: a config problem is a usage
/// error, whatever else went wrong, since it must be fixed first; else the
/// first problem's own exit (4 for an issuer that cannot be reached).
fn exit_for(problems: &[Problem]) -> Exit {
    if problems.iter().any(|problem| problem.exit == Exit::Usage) {
        return Exit::Usage;
    }
    problems
        .first()
        .map_or(Exit::Success, |problem| problem.exit)
}

/// Writes the clients and the problems, as text (clients on stdout,
/// problems on stderr) or as one JSON object on stdout.
fn report(
    args: &CheckArgs,
    mut found: CheckJson<'_>,
    problems: Vec<Problem>,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    let exit = exit_for(&problems);
    let problems: Vec<String> = problems
        .into_iter()
        .map(|problem| problem.message)
        .collect();
    if args.json {
        found.problems = problems;
        serde_json::to_writer_pretty(&mut *stdout, &found)?;
        writeln!(stdout)?;
        stdout.flush()?;
        return Ok(exit);
    }
    let name_width = found
        .clients
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    let provider_width = found
        .clients
        .iter()
        .map(|client| client.provider.len())
        .max()
        .unwrap_or(0);
    for client in &found.clients {
        write!(
            stdout,
            "{:name_width$}  {:provider_width$}  {}",
            one_line(client.name),
            client.provider,
            client.token_url,
        )?;
        match client.issuer {
            Some(issuer) => writeln!(stdout, " (issuer {issuer})")?,
            None => writeln!(stdout)?,
        }
    }
    if let Some(store) = &found.store {
        writeln!(stdout, "{}", store.line())?;
    }
    stdout.flush()?;
    if let Some(problem) = found
        .store
        .as_ref()
        .and_then(|store| store.problem.as_ref())
    {
        fail(stderr, problem)?;
    }
    for problem in &problems {
        fail(stderr, problem)?;
    }
    Ok(exit)
}
