//! The token source of the generic provider: a fixed token endpoint, or
//! one discovered from an issuer.

use std::sync::Arc;

use authmux_core::wire::{HttpClient, RequestSource};
use authmux_core::{Dpop, Error, Token, TokenIdentity, TokenSource};

use crate::discovery::{DiscoveringSource, ServerMetadata};

/// What [`OAuth2Builder::build`](crate::OAuth2Builder::build) makes: a
/// [`TokenSource`] for a configured `token_url`, or for the token endpoint
/// that an `issuer`'s metadata names, found on the first fetch (see
/// [`TokenSource::discover`]). Cloning is cheap.
#[derive(Clone, Debug)]
pub struct OAuth2Source(Kind);

#[derive(Clone, Debug)]
enum Kind {
    Fixed(Box<RequestSource>),
    Discovering(Arc<DiscoveringSource>),
}

impl From<RequestSource> for OAuth2Source {
    fn from(source: RequestSource) -> Self {
        Self(Kind::Fixed(Box::new(source)))
    }
}

impl From<DiscoveringSource> for OAuth2Source {
    fn from(source: DiscoveringSource) -> Self {
        Self(Kind::Discovering(Arc::new(source)))
    }
}

impl OAuth2Source {
    /// The token endpoint: the configured one, or the discovered one once
    /// discovery has succeeded (`None` before).
    pub fn token_url(&self) -> Option<&str> {
        self.request_source().map(RequestSource::token_url)
    }

    /// The configured issuer, for a source that discovers its endpoint.
    pub fn issuer(&self) -> Option<&str> {
        match &self.0 {
            Kind::Fixed(_) => None,
            Kind::Discovering(discovering) => Some(discovering.issuer()),
        }
    }

    /// The issuer's metadata, once discovered. Its `issuer` equals the
    /// configured one: the audience of a client assertion.
    pub fn metadata(&self) -> Option<&ServerMetadata> {
        match &self.0 {
            Kind::Fixed(_) => None,
            Kind::Discovering(discovering) => discovering.metadata(),
        }
    }

    /// The source that sends the token request: the fixed one, or the
    /// one built once discovery has succeeded.
    pub fn request_source(&self) -> Option<&RequestSource> {
        match &self.0 {
            Kind::Fixed(source) => Some(source),
            Kind::Discovering(discovering) => discovering.discovered(),
        }
    }

    async fn resolved(&self) -> Result<&RequestSource, Error> {
        match &self.0 {
            Kind::Fixed(source) => Ok(source),
            Kind::Discovering(discovering) => discovering.source().await,
        }
    }
}

#[async_trait::async_trait]
impl TokenSource for OAuth2Source {
    fn provider(&self) -> &str {
        crate::NAME
    }

    /// For an issuer, the identity names the issuer, not the endpoint
    /// found later: it must not change once the cache is built.
    fn identity(&self) -> TokenIdentity {
        match &self.0 {
            Kind::Fixed(source) => source.identity(),
            Kind::Discovering(discovering) => discovering.identity().clone(),
        }
    }

    async fn fetch_token(&self) -> Result<Token, Error> {
        self.resolved().await?.fetch_token().await
    }

    fn dpop(&self) -> Option<&Dpop> {
        match &self.0 {
            Kind::Fixed(source) => source.dpop(),
            Kind::Discovering(discovering) => discovering.dpop(),
        }
    }

    async fn identity_fields(&self) -> Result<Vec<(String, String)>, Error> {
        self.resolved().await?.identity_fields().await
    }

    fn http_client(&self) -> Option<&HttpClient> {
        match &self.0 {
            Kind::Fixed(source) => source.http_client(),
            Kind::Discovering(discovering) => Some(discovering.http()),
        }
    }

    fn needs_discovery(&self) -> bool {
        match &self.0 {
            Kind::Fixed(_) => false,
            Kind::Discovering(discovering) => discovering.pending(),
        }
    }

    async fn discover(&self) -> Result<Option<String>, Error> {
        match &self.0 {
            Kind::Fixed(_) => Ok(None),
            Kind::Discovering(discovering) => discovering
                .source()
                .await
                .map(|source| Some(source.token_url().to_owned())),
        }
    }
}
