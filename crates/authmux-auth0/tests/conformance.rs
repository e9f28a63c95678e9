//! The conformance suite every provider passes (`authmux-testkit`'s
//! `conformance` module): one test per shared behaviour.

use authmux_auth0::{Auth0Provider, NAME, TOKEN_PATH};
use authmux_core::EndpointBuilder as _;
use authmux_testkit::conformance::Subject;

fn subject() -> Subject {
    Subject::new(NAME, TOKEN_PATH, |base, http, secret| {
        Ok(Auth0Provider::builder(base, "client-1", secret)
            .audience("https://api.example.com")
            .http_client(http)
            .build()?
            .into())
    })
}

authmux_testkit::conformance_tests!(subject());
