//! Which config keys hold a secret's source: the fields whose type reads a
//! value as [`ClientSecret`] does (`client_secret`, `client_assertion_key`,
//! `[store] encryption_key`, `password`…). They are found by asking serde,
//! not listed by hand, so that a key added to a provider's config or to
//! `[store]` is covered the day it is added: a variable naming its source
//! replaces the file's, and a wrong value under it is never quoted.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use authmux_core::ClientSecret;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Expected, IntoDeserializer, MapAccess};
use serde::{Deserialize, Deserializer, forward_to_deserialize_any};

use crate::store::StoreConfig;

/// The keys of a client table that take a secret's source, in the config
/// of any compiled-in provider or among the [`Settings`](crate::Settings)
/// every client carries (`tls_client_certificate`, `tls_client_key`…).
pub(crate) fn in_clients() -> &'static BTreeSet<&'static str> {
    static KEYS: LazyLock<BTreeSet<&'static str>> = LazyLock::new(|| {
        crate::providers::TABLE
            .iter()
            .flat_map(|entry| (entry.secret_keys)())
            .chain(of::<crate::Settings>())
            .collect()
    });
    &KEYS
}

/// The keys of `[store]` that take a secret's source.
pub(crate) fn in_store() -> &'static BTreeSet<&'static str> {
    static KEYS: LazyLock<BTreeSet<&'static str>> =
        LazyLock::new(|| of::<StoreConfig>().into_iter().collect());
    &KEYS
}

/// Whether `key` takes a secret's source in some table.
pub(crate) fn is_secret(key: &str) -> bool {
    in_clients().contains(key) || in_store().contains(key)
}

/// The fields of the struct `T` whose type (or `Option` of it) reads a
/// value as [`ClientSecret`] does.
pub(crate) fn of<T: DeserializeOwned>() -> Vec<&'static str> {
    let Err(Seen::Expecting(secret)) = ClientSecret::deserialize(FieldValue) else {
        return Vec::new();
    };
    let Err(Seen::Fields(fields)) = T::deserialize(Table { field: None }) else {
        return Vec::new();
    };
    fields
        .iter()
        .copied()
        .filter(|&field| {
            matches!(
                T::deserialize(Table { field: Some(field) }),
                Err(Seen::Expecting(expected)) if expected == secret
            )
        })
        .collect()
}

/// What a type asked of the probe; every probe ends with one of these.
#[derive(Debug)]
enum Seen {
    /// A struct, and the names of its fields.
    Fields(&'static [&'static str]),
    /// A value, and what the type's visitor says it expects.
    Expecting(String),
    /// Any other error.
    Other,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Seen {}

impl de::Error for Seen {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self::Other
    }
}

/// Stands in for a table: without a field, reports the struct's fields;
/// with one, a table holding only that field, its value a [`FieldValue`].
struct Table {
    field: Option<&'static str>,
}

impl<'de> Deserializer<'de> for Table {
    type Error = Seen;

    fn deserialize_any<V: de::Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Seen> {
        Err(Seen::Other)
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Seen> {
        match self.field {
            None => Err(Seen::Fields(fields)),
            Some(field) => visitor.visit_map(OneField { field: Some(field) }),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The one entry of a probed table.
struct OneField {
    field: Option<&'static str>,
}

impl<'de> MapAccess<'de> for OneField {
    type Error = Seen;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Seen> {
        self.field
            .take()
            .map(|field| seed.deserialize(field.into_deserializer()))
            .transpose()
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Seen> {
        seed.deserialize(FieldValue)
    }
}

/// Stands in for a field's value: reports what its type expects, looking
/// through `Option` and newtypes.
struct FieldValue;

impl<'de> Deserializer<'de> for FieldValue {
    type Error = Seen;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Seen> {
        Err(Seen::Expecting((&visitor as &dyn Expected).to_string()))
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Seen> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Seen> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keys_that_take_a_secret_are_found_by_type() {
        assert_eq!(of::<StoreConfig>(), ["encryption_key", "password"]);
    }

    #[test]
    fn option_and_plain_secret_fields_are_found_and_nothing_else() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Probed {
            plain: ClientSecret,
            optional: Option<ClientSecret>,
            named_secret_but_text: String,
            table: std::collections::BTreeMap<String, String>,
            flag: bool,
        }
        assert_eq!(of::<Probed>(), ["plain", "optional"]);
    }

    #[cfg(all(feature = "auth0", feature = "oauth2", feature = "mention-me"))]
    #[test]
    fn every_providers_secret_keys_are_found() {
        let keys: Vec<&str> = in_clients().iter().copied().collect();
        assert_eq!(
            keys,
            [
                "client_assertion_key",
                "client_secret",
                "tls_ca",
                "tls_client_certificate",
                "tls_client_key"
            ]
        );
    }
}
