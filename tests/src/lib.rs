//! Integration tests for authmux live in `tests/tests/`.
