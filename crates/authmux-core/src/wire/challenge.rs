//! Reading `WWW-Authenticate` challenges (RFC 9110 §11.6.1) with the
//! `http-auth` parser: several challenges in one field, several fields,
//! quoted and unquoted parameter values.

use http_auth::ChallengeRef;
use http_auth::parser::ChallengeParser;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};

/// Every challenge of every `WWW-Authenticate` field, in order. A field
/// that stops parsing keeps the challenges read before the fault; a field
/// that is not visible ASCII is skipped.
fn challenges(headers: &HeaderMap) -> impl Iterator<Item = ChallengeRef<'_>> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| ChallengeParser::new(value).map_while(Result::ok))
}

/// Whether a response's `WWW-Authenticate` fields carry a challenge with
/// the parameter `error` set to `error`, under `scheme` (compared
/// case-insensitively) when one is given: `Bearer error="invalid_token"`
/// (RFC 6750 §3) or `DPoP error="use_dpop_nonce"` (RFC 9449 §9).
///
/// Challenges are parsed per RFC 9110 §11.6.1, so the one sought may follow
/// another in the same field (`Bearer realm="api", DPoP algs="ES256",
/// error="use_dpop_nonce"`) and its value may be a token or a quoted
/// string (`error=invalid_token`). Malformed text never matches and never
/// panics.
pub fn www_authenticate_error(headers: &HeaderMap, scheme: Option<&str>, error: &str) -> bool {
    challenges(headers).any(|challenge| {
        scheme.is_none_or(|scheme| challenge.scheme.eq_ignore_ascii_case(scheme))
            && challenge.params.iter().any(|(name, value)| {
                name.eq_ignore_ascii_case("error") && value.to_unescaped() == error
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(fields: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for field in fields {
            headers.append(
                WWW_AUTHENTICATE,
                HeaderValue::from_bytes(field).expect("a header value"),
            );
        }
        headers
    }

    fn nonce(fields: &[&[u8]]) -> bool {
        www_authenticate_error(&headers(fields), Some("DPoP"), "use_dpop_nonce")
    }

    fn invalid_token(fields: &[&[u8]]) -> bool {
        www_authenticate_error(&headers(fields), None, "invalid_token")
    }

    #[test]
    fn a_challenge_after_another_in_the_same_field_is_found() {
        assert!(nonce(&[
            br#"Bearer realm="x", DPoP algs="ES256", error="use_dpop_nonce""#
        ]));
        assert!(nonce(&[
            br#"Bearer realm="x", error="invalid_token", dpop algs="ES256 PS256", error=use_dpop_nonce"#
        ]));
        assert!(invalid_token(&[
            br#"Basic realm="legacy", Bearer realm="api", error="invalid_token""#
        ]));
    }

    #[test]
    fn unquoted_and_escaped_values_are_read() {
        assert!(nonce(&[b"DPoP error=use_dpop_nonce"]));
        assert!(nonce(&[b"DPOP ERROR = use_dpop_nonce , algs=ES256"]));
        assert!(nonce(&[br#"DPoP error="use\_dpop\_nonce""#]));
        assert!(invalid_token(&[b"Bearer error=invalid_token"]));
        assert!(invalid_token(&[b"bearer realm=api,error=invalid_token"]));
    }

    #[test]
    fn every_field_is_read() {
        assert!(nonce(&[
            br#"Bearer realm="x""#,
            br#"DPoP algs="ES256", error="use_dpop_nonce""#
        ]));
        assert!(invalid_token(&[
            b"Basic realm=x",
            b"not a challenge list ((",
            br#"Bearer error="invalid_token""#
        ]));
    }

    #[test]
    fn the_scheme_and_the_error_must_both_match() {
        assert!(!nonce(&[br#"Bearer error="use_dpop_nonce""#]));
        assert!(!nonce(&[
            br#"Bearer realm="x", DPoP error="invalid_token""#
        ]));
        assert!(!nonce(&[br#"DPoP error="use_dpop_nonce_later""#]));
        assert!(!nonce(&[br#"DPoP error_description="use_dpop_nonce""#]));
        assert!(!invalid_token(&[br#"Bearer realm="error=invalid_token""#]));
        assert!(!invalid_token(&[br#"Bearer error="insufficient_scope""#]));
        assert!(!invalid_token(&[]));
        assert!(!nonce(&[]));
    }

    #[test]
    fn garbage_never_matches_and_never_panics() {
        let garbage: &[&[u8]] = &[
            b"",
            b",,,",
            b"DPoP",
            b"DPoP ,",
            b"DPoP error",
            b"DPoP error=",
            b"DPoP error=\"use_dpop_nonce",
            b"DPoP error=\"use_dpop_nonce\\",
            b"DPoP =use_dpop_nonce",
            b"\"DPoP\" error=use_dpop_nonce",
            b"DPoP error==use_dpop_nonce",
            b"DPoP abc123==",
            b"DPoP error=\"\xe9\"",
            b"\xff\xfe error=use_dpop_nonce",
            b"DPoP\terror\t=\t\"x\"\t,",
        ];
        for field in garbage {
            assert!(!nonce(&[field]), "{:?}", String::from_utf8_lossy(field));
            assert!(!invalid_token(&[field]));
        }
        // A fault later in a field keeps the challenges read before it.
        assert!(nonce(&[b"DPoP error=use_dpop_nonce, Bearer realm=x, ((("]));
    }
}
