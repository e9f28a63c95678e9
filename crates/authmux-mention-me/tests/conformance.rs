//! The conformance suite every provider passes (`authmux-testkit`'s
//! `conformance` module): one test per shared behaviour.

use authmux_core::EndpointBuilder as _;
use authmux_mention_me::{Environment, MentionMeProvider, NAME, TOKEN_PATH};
use authmux_testkit::conformance::Subject;

fn subject() -> Subject {
    Subject::new(NAME, TOKEN_PATH, |base, http, secret| {
        Ok(MentionMeProvider::builder("client-1", secret)
            .environment(Environment::Demo)
            .base_url(base)
            .http_client(http)
            .build()?
            .into())
    })
}

authmux_testkit::conformance_tests!(subject());
