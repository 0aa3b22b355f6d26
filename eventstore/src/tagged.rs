//! A stored event read straight into its domain type: the event name as the
//! variant of the externally tagged enum, the payload's JSON text as its
//! content. Reading through a `serde_json::Value` first (as upcasting needs)
//! builds a tree of maps and strings only to take it apart again; events at
//! their current version skip it.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, VariantAccess, Visitor};
use serde_json::Error;
use serde_json::de::StrRead;

/// `variant` with `content` (JSON text) as an externally tagged enum value.
pub(crate) struct Tagged<'a> {
    pub variant: &'a str,
    pub content: &'a str,
}

impl<'a> Tagged<'a> {
    /// Reads the content with `read`, which must take all of it.
    fn content<T>(
        self,
        read: impl FnOnce(&mut serde_json::Deserializer<StrRead<'a>>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut content = serde_json::Deserializer::from_str(self.content);
        let value = read(&mut content)?;
        content.end()?;
        Ok(value)
    }
}

impl<'de> Deserializer<'de> for Tagged<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> EnumAccess<'de> for Tagged<'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
        let variant = seed.deserialize(IntoDeserializer::<Error>::into_deserializer(self.variant))?;
        Ok((variant, self))
    }
}

impl<'de> VariantAccess<'de> for Tagged<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        self.content(|content| de::Deserialize::deserialize(content))
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        self.content(|content| seed.deserialize(content))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.content(|content| content.deserialize_tuple(len, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        self.content(|content| content.deserialize_struct("", fields, visitor))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Event {
        Opened,
        Renamed(String),
        Moved(i64, i64),
        Earned { store: String, points: u64, note: Option<String> },
    }

    /// Through a `Value`, as upcast events are read.
    fn via_value(variant: &str, content: &str) -> Result<Event, String> {
        let tagged = match serde_json::from_str::<Value>(content).map_err(|e| e.to_string())? {
            Value::Null => Value::String(variant.to_string()),
            other => Value::Object([(variant.to_string(), other)].into_iter().collect()),
        };
        serde_json::from_value(tagged).map_err(|e| e.to_string())
    }

    fn straight(variant: &str, content: &str) -> Result<Event, String> {
        Event::deserialize(Tagged { variant, content }).map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_of_variant_reads_as_through_a_value() {
        let events = [
            Event::Opened,
            Event::Renamed("café \"au\" lait".into()),
            Event::Moved(-3, 4),
            Event::Earned { store: "cafe".into(), points: 50, note: None },
            Event::Earned { store: "cafe".into(), points: u64::MAX, note: Some("🎉".into()) },
        ];
        for event in events {
            let tagged = serde_json::to_value(&event).unwrap();
            let (variant, content) = match tagged {
                Value::String(variant) => (variant, "null".to_string()),
                Value::Object(map) => {
                    let (variant, content) = map.into_iter().next().unwrap();
                    (variant, content.to_string())
                }
                other => panic!("not externally tagged: {other}"),
            };
            assert_eq!(straight(&variant, &content), Ok(event));
            assert_eq!(straight(&variant, &content), via_value(&variant, &content));
        }
    }

    #[test]
    fn bad_payloads_are_refused_like_through_a_value() {
        let earned = json!({ "store": "cafe", "points": 1, "note": null }).to_string();
        let cases = [
            ("Nope", earned.as_str()),
            ("Earned", "{\"store\": \"cafe\""),
            ("Earned", "{\"store\": \"cafe\", \"points\": -1, \"note\": null}"),
            ("Earned", "{\"store\": \"cafe\", \"points\": 1, \"note\": null} trailing"),
            ("Earned", "{\"store\": \"cafe\", \"points\": 1}, \"Opened\": null"),
            ("Opened", "{}"),
            ("Renamed", "null"),
            ("Moved", "[1]"),
        ];
        for (variant, content) in cases {
            let read = straight(variant, content);
            assert!(read.is_err(), "{variant} {content}: {read:?}");
            assert_eq!(
                read.unwrap_err().starts_with("unknown variant"),
                variant == "Nope",
                "{variant} {content}: named as unknown only when it is"
            );
            assert!(via_value(variant, content).is_err(), "{variant} {content}");
        }
    }
}
