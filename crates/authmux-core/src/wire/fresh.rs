//! Body parameters whose value is found anew for every request sent: a
//! client assertion minted per request, a token issued by someone else
//! and re-read as it rotates, another client's access token.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;

use crate::assertion::ClientAssertion;
use crate::error::Error;

/// A secret value that a token request sends and that may change between
/// requests: read again for every request, retries and the DPoP nonce
/// retry included, so that each carries the freshest one.
///
/// `Debug` must describe the source, never the value.
#[async_trait::async_trait]
pub trait FreshValue: Send + Sync + fmt::Debug + 'static {
    /// The value to send now.
    ///
    /// # Errors
    ///
    /// When it cannot be read: the request is not sent.
    async fn value(&self) -> Result<SecretString, Error>;

    /// What names the value's source in a token's identity (`file
    /// /var/run/token`, `client entra`), never the value itself.
    fn describe(&self) -> String;

    /// Identity fields only known once the value is read, such as the
    /// `iss` and `sub` of a JWT, named by their claim: a token obtained
    /// with the value depends on them. Reads the value if it was never
    /// read. None by default.
    ///
    /// # Errors
    ///
    /// When the value cannot be read.
    async fn identity_fields(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(Vec::new())
    }
}

/// The value of one fresh parameter.
#[derive(Clone, Debug)]
pub(crate) enum Fresh {
    /// Sent as it is, with the parameters it belongs to (a
    /// `client_assertion_type` before its `client_assertion`).
    Fixed(Cow<'static, str>),
    /// A new JWT client assertion for every request.
    Minted(ClientAssertion),
    /// Read from its source for every request.
    Read(Arc<dyn FreshValue>),
}

/// A parameter's name and where its value comes from.
#[derive(Clone, Debug)]
pub(crate) struct FreshParam {
    pub(crate) name: Cow<'static, str>,
    pub(crate) value: Fresh,
}

/// What a fresh parameter sends for one request.
pub(crate) enum Sent<'a> {
    /// A value that is no secret.
    Plain(&'a str),
    /// A secret, to be scrubbed from the answer.
    Secret(SecretString),
}

impl FreshParam {
    /// The value for this request.
    pub(crate) async fn value(&self) -> Result<Sent<'_>, Error> {
        match &self.value {
            Fresh::Fixed(value) => Ok(Sent::Plain(value)),
            Fresh::Minted(assertion) => assertion.mint().map(Sent::Secret),
            Fresh::Read(source) => source.value().await.map(Sent::Secret),
        }
    }
}
