//! The TLS identity of an [`HttpClient`](super::HttpClient): the CAs it
//! trusts, the client certificate it presents, and the proxy it goes
//! through.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use secrecy::ExposeSecret as _;
use secrecy::zeroize::Zeroizing;

use crate::error::Error;
use crate::secret::ClientSecret;

/// The TLS settings of an [`HttpClient`](super::HttpClient). Each PEM comes
/// inline, from `{ env = "…" }` or from `{ file = "…" }`, as a
/// [`ClientSecret`] does.
///
/// A CA bundle (`tls_ca`) is trusted **as well as** the system's roots
/// unless [`ca_only`](Self::ca_only) is set: adding a corporate CA must not
/// break every other endpoint the process reaches, and a client that wants
/// to pin its token endpoint to one CA says so.
///
/// `Debug` names variables and files, never an inline value, so the
/// private key never shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TlsConfig {
    /// CA certificates (PEM) to trust (`tls_ca`).
    pub ca: Option<ClientSecret>,
    /// Whether [`ca`](Self::ca) replaces the system's roots instead of
    /// adding to them (`tls_ca_only`).
    pub ca_only: bool,
    /// The client certificate chain (PEM), leaf first, and its private key
    /// unless [`client_key`](Self::client_key) is set
    /// (`tls_client_certificate`).
    pub client_certificate: Option<ClientSecret>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) when it is apart from
    /// the certificate (`tls_client_key`).
    pub client_key: Option<ClientSecret>,
}

impl TlsConfig {
    /// Trusts the CA certificates of `ca` as well as the system's roots.
    pub fn ca(mut self, ca: impl Into<ClientSecret>) -> Self {
        self.ca = Some(ca.into());
        self
    }

    /// Trusts only the CA certificates of [`ca`](Self::ca), not the
    /// system's roots.
    pub fn ca_only(mut self, only: bool) -> Self {
        self.ca_only = only;
        self
    }

    /// Presents the certificate chain of `certificate`, with the private
    /// key it holds unless [`client_key`](Self::client_key) gives one.
    pub fn client_certificate(mut self, certificate: impl Into<ClientSecret>) -> Self {
        self.client_certificate = Some(certificate.into());
        self
    }

    /// The private key of the client certificate, when apart from it.
    pub fn client_key(mut self, key: impl Into<ClientSecret>) -> Self {
        self.client_key = Some(key.into());
        self
    }

    /// What the client certificate is, read from its source: `None`
    /// without one. Errors are those of building the client.
    pub fn client_certificate_info(&self) -> Result<Option<CertificateInfo>, Error> {
        let Some(source) = &self.client_certificate else {
            return Ok(None);
        };
        let pem = Pem::read(source, "tls_client_certificate", "certificate file", true)?;
        let leaf = &pem.certificates()?[0];
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|_| pem.problem("the first certificate in it cannot be read"))?;
        let not_after = u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0);
        Ok(Some(CertificateInfo {
            subject: parsed.subject().to_string(),
            issuer: parsed.issuer().to_string(),
            thumbprint: thumbprint(leaf),
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after),
        }))
    }

    /// The files the settings are read from, watched for changes.
    pub(crate) fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        [&self.ca, &self.client_certificate, &self.client_key]
            .into_iter()
            .filter_map(|source| match source {
                Some(ClientSecret::File { file }) => Some(file.as_path()),
                _ => None,
            })
    }

    /// Applies the settings to a reqwest client under construction,
    /// reading and checking every PEM, and returns the thumbprint of the
    /// client certificate it presents. Errors name the key and the file:
    /// `tls_client_certificate: /etc/x.pem: no certificate in it`.
    pub(crate) fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<(reqwest::ClientBuilder, Option<std::sync::Arc<str>>), Error> {
        if let Some(ca) = &self.ca {
            let roots = Pem::read(ca, "tls_ca", "CA file", false)?
                .certificates()?
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| Error::config("tls_ca: a certificate in it cannot be read"))?;
            builder = if self.ca_only {
                builder.tls_certs_only(roots)
            } else {
                builder.tls_certs_merge(roots)
            };
        } else if self.ca_only {
            return Err(Error::config(
                "tls_ca_only: set tls_ca too, the CAs to trust instead of the system's",
            ));
        }
        let mut certificate = None;
        if let Some((identity, thumbprint)) = self.identity()? {
            builder = builder.identity(identity);
            certificate = Some(std::sync::Arc::from(thumbprint));
        }
        Ok((builder, certificate))
    }

    /// The client certificate chain and its key, checked, and the leaf's
    /// thumbprint.
    fn identity(&self) -> Result<Option<(reqwest::Identity, String)>, Error> {
        let Some(certificate) = &self.client_certificate else {
            if self.client_key.is_some() {
                return Err(Error::config(
                    "tls_client_key: only used with tls_client_certificate; set it too",
                ));
            }
            return Ok(None);
        };
        const CERTIFICATE: &str = "tls_client_certificate";
        let chain = Pem::read(certificate, CERTIFICATE, "certificate file", true)?;
        let key = match &self.client_key {
            Some(key) => {
                if chain.key.is_some() {
                    return Err(Error::config(
                        "tls_client_key: tls_client_certificate already holds a private key; \
                         remove one of them",
                    ));
                }
                Pem::read(key, "tls_client_key", "key file", true)?.into_key()?
            }
            None => chain.key.clone().ok_or_else(|| {
                chain.problem("no private key in it; add it, or set tls_client_key")
            })?,
        };
        let certificates = chain.certificates()?;
        // reqwest takes an identity as PEM only: written again from the
        // checked sections, so that nothing it does not know reaches it.
        let mut pem = Zeroizing::new(String::new());
        for der in certificates {
            encode(&mut pem, SectionKind::Certificate, der);
        }
        encode(&mut pem, key.0, &key.1);
        let leaf = thumbprint(&certificates[0]);
        reqwest::Identity::from_pem(pem.as_bytes())
            .map(|identity| Some((identity, leaf)))
            .map_err(|_| chain.problem("the certificate or its key cannot be used"))
    }
}

/// What `authmux check` shows of a client certificate (the leaf of the
/// chain): never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateInfo {
    /// The subject's distinguished name: `CN=payments, O=Acme`.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The base64url SHA-256 of the DER certificate, as RFC 8705's
    /// `cnf.x5t#S256` carries it.
    pub thumbprint: String,
    /// When it expires (`notAfter`).
    pub not_after: SystemTime,
}

/// The base64url (unpadded) SHA-256 of a DER certificate: its RFC 8705
/// `x5t#S256` thumbprint.
pub fn thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Appends one PEM section.
fn encode(pem: &mut String, kind: SectionKind, der: &[u8]) {
    let label = match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let base64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    pem.push_str("-----BEGIN ");
    pem.push_str(label);
    pem.push_str("-----\n");
    for line in base64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END ");
    pem.push_str(label);
    pem.push_str("-----\n");
}

/// A private key's PEM kind and DER bytes, wiped when dropped.
#[derive(Clone)]
struct Key(SectionKind, Zeroizing<Vec<u8>>);

/// The certificates and the private key of one PEM source.
struct Pem {
    field: &'static str,
    /// The file, for errors: `tls_ca: /etc/ca.pem: no certificate in it`.
    file: Option<String>,
    certificates: Vec<Vec<u8>>,
    key: Option<Key>,
}

impl Pem {
    /// Reads and splits `source`. Errors never quote the text, which may
    /// hold a key (`secret`), and say which section is wrong only by kind.
    fn read(
        source: &ClientSecret,
        field: &'static str,
        file_noun: &str,
        secret: bool,
    ) -> Result<Self, Error> {
        let text = source.resolve_file(field, file_noun)?;
        let mut pem = Self {
            field,
            file: match source {
                ClientSecret::File { file } => Some(file.display().to_string()),
                _ => None,
            },
            certificates: Vec::new(),
            key: None,
        };
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(text.expose_secret().as_bytes()) {
            let (kind, der) = section.map_err(|error| {
                if secret {
                    pem.problem("not valid PEM")
                } else {
                    pem.problem(&format!("not valid PEM: {error}"))
                }
            })?;
            match kind {
                SectionKind::Certificate => pem.certificates.push(der),
                SectionKind::PrivateKey
                | SectionKind::RsaPrivateKey
                | SectionKind::EcPrivateKey => {
                    if pem.key.is_some() {
                        return Err(pem.problem("more than one private key in it"));
                    }
                    pem.key = Some(Key(kind, Zeroizing::new(der)));
                }
                _ => {}
            }
        }
        Ok(pem)
    }

    /// The certificates; an error if there are none.
    fn certificates(&self) -> Result<&[Vec<u8>], Error> {
        if self.certificates.is_empty() {
            return Err(self.problem("no certificate in it"));
        }
        Ok(&self.certificates)
    }

    /// The private key; an error if there is none.
    fn into_key(self) -> Result<Key, Error> {
        match self.key {
            Some(key) => Ok(key),
            None => Err(self.problem(
                "no private key in it (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            )),
        }
    }

    fn problem(&self, why: &str) -> Error {
        match &self.file {
            Some(file) => Error::config(format!("{}: {file}: {why}", self.field)),
            None => Error::config(format!("{}: {why}", self.field)),
        }
    }
}

/// A proxy as configured: a URL, shown without its password, or
/// [`DIRECT`]: no proxy at all, whatever the environment says (for a
/// client that must not take the proxy `[defaults]` gives every client).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl(Option<url::Url>);

/// The `proxy` value that sends requests directly, ignoring the
/// environment's `HTTPS_PROXY` and a proxy in `[defaults]`.
pub const DIRECT: &str = "direct";

impl ProxyUrl {
    /// Checks `url`: an `http` or `https` URL, or [`DIRECT`]. Errors name
    /// the `proxy` key and never quote the URL, which may carry a password.
    pub fn parse(url: &str) -> Result<Self, Error> {
        if url.trim() == DIRECT {
            return Ok(Self(None));
        }
        let parsed = url::Url::parse(url.trim())
            .map_err(|error| Error::config(format!("proxy: not a URL ({error})")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(Error::config(
                "proxy: must be an http:// or https:// URL, such as \"http://proxy.corp:3128\", \
                 or \"direct\"",
            ));
        }
        Ok(Self(Some(parsed)))
    }

    /// No proxy at all.
    pub fn direct() -> Self {
        Self(None)
    }

    /// The URL, password included; `None` for [`DIRECT`].
    pub fn as_url(&self) -> Option<&url::Url> {
        self.0.as_ref()
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(url) = &self.0 else {
            return f.write_str("ProxyUrl(direct)");
        };
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("[redacted]"));
        }
        write!(f, "ProxyUrl({shown})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.pem");
        std::fs::write(&path, "no PEM here\n").expect("write");
        let refusal = |tls: TlsConfig| {
            tls.apply(reqwest::Client::builder())
                .map(|_| ())
                .expect_err("refused")
                .to_string()
        };
        let file = ClientSecret::File { file: path.clone() };
        assert_eq!(
            refusal(TlsConfig::default().client_certificate(file.clone())),
            format!(
                "tls_client_certificate: {}: no private key in it; add it, or set tls_client_key",
                path.display()
            )
        );
        assert_eq!(
            refusal(TlsConfig::default().ca(file)),
            format!("tls_ca: {}: no certificate in it", path.display())
        );
        assert!(
            refusal(TlsConfig::default().ca_only(true)).starts_with("tls_ca_only: set tls_ca too")
        );
    }

    #[test]
    fn refusing_alerts_are_named_as_the_rfc_names_them() {
        use rustls::AlertDescription as Alert;
        let named = |alert| super::super::refusal(&rustls::Error::AlertReceived(alert));
        assert_eq!(named(Alert::UnknownCA).as_deref(), Some("unknown_ca"));
        assert_eq!(
            named(Alert::CertificateRequired).as_deref(),
            Some("certificate_required")
        );
        assert_eq!(
            named(Alert::BadCertificate).as_deref(),
            Some("bad_certificate")
        );
        assert_eq!(named(Alert::ProtocolVersion), None);
        assert_eq!(
            super::super::refusal(&rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            )),
            None
        );
    }

    #[test]
    fn the_thumbprint_is_base64url_sha256() {
        // SHA-256 of the empty input.
        assert_eq!(
            thumbprint(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn a_proxy_password_is_not_shown() {
        let proxy = ProxyUrl::parse("http://user:pa55w0rd@proxy.corp:3128").expect("valid");
        let debug = format!("{proxy:?}");
        assert!(!debug.contains("pa55w0rd"), "{debug}");
        assert!(debug.contains("proxy.corp:3128"), "{debug}");
        // Nor in the HTTP client's Debug, nor its API client's.
        let http =
            crate::wire::HttpClient::with_config(crate::wire::HttpConfig::default().proxy(proxy))
                .expect("a client");
        let api = http.api_client().expect("an API client");
        for shown in [format!("{http:?}"), format!("{api:?}")] {
            assert!(!shown.contains("pa55w0rd"), "{shown}");
            assert!(shown.contains("proxy.corp:3128"), "{shown}");
        }
        let error = ProxyUrl::parse("socks5://user:pa55w0rd@proxy.corp")
            .expect_err("refused")
            .to_string();
        assert!(error.starts_with("proxy: must be"), "{error}");
        assert!(!error.contains("pa55w0rd"), "{error}");
    }
}
