//! `authmux check`: validate the config and show every client, each with
//! its token endpoint (discovered for clients configured with an issuer) or
//! what stops it, the token store and the file read.

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use authmux::{Config, Registry, Settings};
use clap::Args;
use serde::Serialize;

use crate::store::StoreStatus;
use crate::{Exit, fail, one_line};

pub(crate) const CHECK_EXAMPLES: &str = "\
Examples:
  authmux check
  authmux check --config deploy/authmux.toml || exit 1
  authmux check --json | jq '.clients[].name'

The first line names the config file read. Each client follows, with its
token endpoint or, if it cannot be used, why not, and the subject, issuer,
x5t#S256 thumbprint and expiry of its TLS client certificate, if any
(flagged when it expires within 7 days); a client with another
grant, or whose requests carry a token from elsewhere (a workload identity
file, another client's token to exchange), has a second line naming them,
the chain of clients followed, never a token. A client configured with
an issuer shows the token endpoint discovered from the issuer's metadata; a
failed discovery is a problem (exit 4 when the issuer cannot be reached, 2
when its metadata does not fit the config). The last line names the token
store and whether it can be reached. A store that cannot be reached is
reported but does not fail the check: tokens are then fetched without it.";

/// The arguments of `authmux check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print one JSON object: the file read, the clients, the store and
    /// every problem.
    #[arg(long)]
    pub json: bool,
}

/// What `authmux check --json` prints. The field order is the output's.
#[derive(Debug, Default, Serialize)]
struct CheckJson {
    /// The config file read (or named and found, if it could not be read).
    file: Option<String>,
    /// Every configured client, usable or not.
    clients: Vec<ClientJson>,
    /// The token store, once the config was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreStatus>,
    /// Every problem, one line each, as stderr would show them: the
    /// clients' and the others.
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ClientJson {
    name: String,
    provider: String,
    /// The token endpoint; for a client with an issuer, the discovered
    /// one (or the issuer, if discovery failed); `None` for a client that
    /// cannot be built.
    token_url: Option<String>,
    /// The issuer the token endpoint was discovered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    /// The grant: `client_credentials`, `jwt_bearer` or `token_exchange`.
    grant_type: String,
    /// What its requests carry from elsewhere, never the values:
    /// `client_assertion: file /var/run/token`, `subject_token: client
    /// entra`, followed along the chain of clients (`client entra
    /// (client_assertion: file /var/run/token)`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<String>,
    /// The TLS client certificate it presents, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<CertificateJson>,
    /// What stops this client; empty when it is usable.
    problems: Vec<String>,
}

/// A client certificate as `check` shows it: never its key.
#[derive(Debug, Serialize)]
struct CertificateJson {
    subject: String,
    issuer: String,
    /// base64url SHA-256 of the DER certificate, as `cnf.x5t#S256`.
    thumbprint: String,
    /// `notAfter`, RFC 3339.
    expires: String,
    /// Whether it expires within [`EXPIRES_SOON`].
    expires_soon: bool,
}

/// How close to its expiry a client certificate is flagged.
const EXPIRES_SOON: Duration = Duration::from_secs(7 * 24 * 3600);

/// The client certificate of a client with `settings`, if it has one that
/// can be read (one that cannot is already a problem of the client).
fn certificate(settings: &Settings) -> Option<CertificateJson> {
    let info = settings
        .http_config()
        .ok()?
        .tls
        .client_certificate_info()
        .ok()??;
    Some(CertificateJson {
        expires: humantime::format_rfc3339_seconds(info.not_after).to_string(),
        expires_soon: info.not_after < SystemTime::now() + EXPIRES_SOON,
        subject: info.subject,
        issuer: info.issuer,
        thumbprint: info.thumbprint,
    })
}

/// `authmux check`. The outer error is a failure to write the output.
pub(crate) async fn check(
    config: Option<&Path>,
    no_store: bool,
    args: &CheckArgs,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> io::Result<Exit> {
    let loaded = match crate::store::load(config, no_store) {
        Ok(loaded) => loaded,
        Err(error) => {
            // The file that could not be read is still the one checked.
            let path = Config::path(config);
            let found = CheckJson {
                file: path.is_file().then(|| path.display().to_string()),
                ..CheckJson::default()
            };
            let problems = error.problems().iter().map(Problem::config).collect();
            return report(args, found, problems, stdout, stderr);
        }
    };
    let mut problems: Vec<Problem> = Vec::new();
    if loaded.clients.is_empty() {
        // A file was read (a missing one is an error that names the paths
        // tried), but a check that passes on no client would hide a mistake.
        problems.push(Problem::config(match loaded.file() {
            Some(file) => format!("no clients configured in {}", file.display()),
            None => "no clients configured".to_owned(),
        }));
    }
    // Building a client is the part that catches a missing secret variable
    // or a bad URL; each is built on its own, so that one client's problem
    // hides none of the others.
    let mut clients = Vec::new();
    for (name, built) in Registry::each_client(&loaded) {
        let provider = loaded.clients[name].provider.clone();
        let grant_type = loaded.clients[name].grant_type();
        let inputs = inputs(&loaded, name, 0);
        let client = match built {
            Ok(client) => client,
            Err(error) => {
                let found: Vec<String> = error.problems().to_vec();
                problems.extend(found.iter().map(Problem::config));
                clients.push(ClientJson {
                    name: name.to_owned(),
                    provider,
                    token_url: None,
                    issuer: None,
                    grant_type,
                    inputs,
                    certificate: None,
                    problems: found,
                });
                continue;
            }
        };
        // Clients configured with an issuer read its metadata now: the
        // one network request of a check besides the store's.
        let (token_url, found) = match client.token_endpoint().await {
            Ok(token_url) => (token_url, Vec::new()),
            Err(error) => {
                problems.push(Problem {
                    exit: Exit::for_kind(error.kind()),
                    message: error.to_string(),
                });
                (client.token_url().to_owned(), vec![error.to_string()])
            }
        };
        clients.push(ClientJson {
            name: name.to_owned(),
            provider,
            token_url: Some(token_url),
            issuer: client.issuer().map(str::to_owned),
            grant_type,
            inputs,
            certificate: certificate(&loaded.clients[name].settings),
            problems: found,
        });
    }
    let store = match loaded.store.build() {
        Ok(store) => Some(crate::store::status(store.as_ref()).await),
        Err(found) => {
            problems.extend(found.iter().map(Problem::config));
            None
        }
    };
    let found = CheckJson {
        file: loaded.file().map(|file| file.display().to_string()),
        clients,
        store,
        problems: Vec::new(),
    };
    report(args, found, problems, stdout, stderr)
}

/// What the client `name` carries from elsewhere, each `key: source`, with
/// another client's own inputs after it in parentheses: the whole chain of
/// a token exchange. A cycle (reported as a problem) stops the chain.
fn inputs(config: &Config, name: &str, depth: usize) -> Vec<String> {
    let Some(client) = config.clients.get(name) else {
        return Vec::new();
    };
    client
        .token_inputs()
        .into_iter()
        .map(|(key, source)| {
            let next = source
                .strip_prefix("client ")
                .filter(|_| depth < config.clients.len())
                .map(|other| inputs(config, other, depth + 1))
                .unwrap_or_default();
            if next.is_empty() {
                format!("{key}: {source}")
            } else {
                format!("{key}: {source} ({})", next.join(", "))
            }
        })
        .collect()
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
    mut found: CheckJson,
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
    match &found.file {
        Some(file) => writeln!(stdout, "file  {}", one_line(file))?,
        // Without a file, the config is the variables alone, or unreadable.
        None if !found.clients.is_empty() || found.store.is_some() => {
            writeln!(stdout, "file  none")?
        }
        None => {}
    }
    let name_width = found
        .clients
        .iter()
        .map(|client| client.name.len())
        .max()
        .unwrap_or(0);
    let provider_width = found
        .clients
        .iter()
        .map(|client| client.provider.len())
        .max()
        .unwrap_or(0);
    // A line of its own under the client, in the token endpoint's column.
    let under = |stdout: &mut dyn Write, line: &str| -> io::Result<()> {
        writeln!(
            stdout,
            "{:name_width$}  {:provider_width$}  {}",
            "",
            "",
            one_line(line)
        )
    };
    for client in &found.clients {
        write!(
            stdout,
            "{:name_width$}  {:provider_width$}  ",
            one_line(&client.name),
            client.provider,
        )?;
        match (&client.token_url, &client.issuer) {
            (None, _) => writeln!(
                stdout,
                "not usable: {}",
                one_line(&client.problems.join("; "))
            )?,
            (Some(token_url), Some(issuer)) => writeln!(stdout, "{token_url} (issuer {issuer})")?,
            (Some(token_url), None) => writeln!(stdout, "{token_url}")?,
        }
        // A grant other than client credentials, and what the requests
        // carry, on a line of their own under the client.
        if client.grant_type != "client_credentials" || !client.inputs.is_empty() {
            let mut line = format!("grant {}", client.grant_type);
            for input in &client.inputs {
                line.push_str(", ");
                line.push_str(input);
            }
            under(&mut *stdout, &line)?;
        }
        if let Some(certificate) = &client.certificate {
            let line = format!(
                "certificate {}, issuer {}, x5t#S256 {}, expires {}{}",
                certificate.subject,
                certificate.issuer,
                certificate.thumbprint,
                certificate.expires,
                if certificate.expires_soon {
                    " (within 7 days: renew it)"
                } else {
                    ""
                }
            );
            under(&mut *stdout, &line)?;
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
    // A certificate about to expire fails nothing yet, but says so where
    // a person or a monitor reads problems.
    for client in &found.clients {
        if let Some(certificate) = client
            .certificate
            .as_ref()
            .filter(|found| found.expires_soon)
        {
            writeln!(
                stderr,
                "authmux: warning: clients.{}: the client certificate expires at {}, within 7 days",
                one_line(&client.name),
                certificate.expires
            )?;
        }
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_certificate(expires_soon: bool) -> CheckJson {
        CheckJson {
            file: Some("authmux.toml".to_owned()),
            clients: vec![ClientJson {
                name: "bank".to_owned(),
                provider: "oauth2".to_owned(),
                token_url: Some("https://as.bank.example/token".to_owned()),
                issuer: None,
                grant_type: "client_credentials".to_owned(),
                inputs: Vec::new(),
                certificate: Some(CertificateJson {
                    subject: "CN=payments".to_owned(),
                    issuer: "CN=bank CA".to_owned(),
                    thumbprint: "x5t".to_owned(),
                    expires: "2026-12-05T00:00:00Z".to_owned(),
                    expires_soon,
                }),
                problems: Vec::new(),
            }],
            store: None,
            problems: Vec::new(),
        }
    }

    fn text_report(found: CheckJson) -> (Exit, String, String) {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let exit = report(
            &CheckArgs { json: false },
            found,
            Vec::new(),
            &mut stdout,
            &mut stderr,
        )
        .expect("written");
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8");
        (exit, text(stdout), text(stderr))
    }

    #[test]
    fn a_certificate_expiring_within_7_days_is_flagged_and_warned_of_without_failing() {
        let (exit, stdout, stderr) = text_report(with_certificate(true));
        assert_eq!(exit, Exit::Success);
        assert!(stdout.contains("expires 2026-12-05T00:00:00Z (within 7 days: renew it)"));
        assert_eq!(
            stderr,
            "authmux: warning: clients.bank: the client certificate expires at \
             2026-12-05T00:00:00Z, within 7 days\n"
        );
        let (exit, _, stderr) = text_report(with_certificate(false));
        assert_eq!(exit, Exit::Success);
        assert_eq!(stderr, "");
    }
}
