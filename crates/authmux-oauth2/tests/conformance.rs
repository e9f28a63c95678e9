//! The conformance suite every provider passes (`authmux-testkit`'s
//! `conformance` module): one test per shared behaviour.

use authmux_core::EndpointBuilder as _;
use authmux_core::wire::join_url;
use authmux_oauth2::{NAME, OAuth2Provider};
use authmux_testkit::conformance::Subject;

const PATH: &str = "/oauth2/v1/token";

fn subject() -> Subject {
    Subject::new(NAME, PATH, |base, http, secret| {
        Ok(
            OAuth2Provider::builder(join_url(base, PATH), "client-1", secret)
                .scopes(["read:things"])
                .http_client(http)
                .build()?
                .into(),
        )
    })
}

authmux_testkit::conformance_tests!(subject());
