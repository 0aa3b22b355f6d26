//! The schema's own scalars, so that `Int` carries only 32-bit values, as
//! GraphQL defines it and graphql-js enforces:
//!
//! * [`Long`]: a 64-bit integer (positions, sequences, amounts, balances);
//! * [`DateTime`]: an instant, RFC 3339 with microseconds, in UTC.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{SecondsFormat, TimeZone, Utc};

/// A signed 64-bit integer: global positions, stream sequences, amounts paid
/// and running balances, which can outgrow `Int`'s 32 bits.
///
/// Results are JSON numbers. Inputs are integer literals or numbers, or a
/// string of decimal digits (as clients that keep 64-bit values as strings
/// send them). Every value pointstream stores stays within ±(2^53 − 1), so a
/// JavaScript client reads it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Long(pub i64);

/// A signed 64-bit integer: global positions, stream sequences, amounts paid
/// and running balances. Results are JSON numbers; inputs are integers or
/// strings of decimal digits. Values stay within ±(2^53 − 1), which
/// JavaScript numbers represent exactly.
#[Scalar(name = "Long", specified_by_url = "https://ibm.github.io/graphql-specs/custom-scalars/long.html")]
impl ScalarType for Long {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => n.as_i64().map(Long).ok_or_else(|| InputValueError::custom("not a 64-bit integer")),
            Value::String(s) => s
                .parse::<i64>()
                .ok()
                .filter(|_| !s.starts_with('+'))
                .map(Long)
                .ok_or_else(|| InputValueError::custom("not a 64-bit integer in decimal digits")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::Number(n) if n.is_i64()) || matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

impl From<i64> for Long {
    fn from(value: i64) -> Self {
        Long(value)
    }
}

impl From<u64> for Long {
    /// Positions and sequences are stored as `u64` and never reach `i64::MAX`.
    fn from(value: u64) -> Self {
        Long(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

/// An instant: RFC 3339 with microseconds, in UTC (`2026-12-06T09:30:00.123456Z`).
/// Inputs may carry any offset and any number of fraction digits; what is
/// finer than a microsecond is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    /// Microseconds since the Unix epoch, as the read models store instants.
    pub micros: i64,
}

impl DateTime {
    /// The instant `micros` microseconds after the Unix epoch.
    pub fn from_micros(micros: i64) -> Self {
        DateTime { micros }
    }

    /// RFC 3339 text of the instant.
    pub fn to_rfc3339(self) -> String {
        match Utc.timestamp_micros(self.micros).single() {
            Some(at) => at.to_rfc3339_opts(SecondsFormat::Micros, true),
            // Out of chrono's range: cannot come from a stored instant.
            None => String::new(),
        }
    }
}

/// An instant, in RFC 3339 with microseconds and in UTC
/// (`2026-12-06T09:30:00.123456Z`). Inputs may carry any offset.
#[Scalar(name = "DateTime", specified_by_url = "https://scalars.graphql.org/andimarek/date-time")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(text) = &value else { return Err(InputValueError::expected_type(value)) };
        // RFC 3339 text is short; anything longer is not one.
        if text.len() > 64 {
            return Err(InputValueError::custom("not an RFC 3339 date-time"));
        }
        let at = chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|_| InputValueError::custom("not an RFC 3339 date-time, e.g. 2026-12-06T09:30:00Z"))?;
        Ok(DateTime { micros: at.timestamp_micros() })
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_time_is_written_in_utc_with_microseconds_and_read_with_any_offset() {
        let at = DateTime::from_micros(1_765_013_400_123_456);
        assert_eq!(at.to_value(), Value::String("2025-12-06T09:30:00.123456Z".into()));
        let parsed = DateTime::parse(Value::String("2025-12-06T10:30:00.123456789+01:00".into())).unwrap();
        assert_eq!(parsed, at);
        assert!(DateTime::parse(Value::String("yesterday".into())).is_err());
        assert!(DateTime::parse(Value::from(1)).is_err());
    }

    #[test]
    fn a_long_is_a_number_out_and_a_number_or_decimal_string_in() {
        assert_eq!(Long(9_007_199_254_740_991).to_value(), Value::from(9_007_199_254_740_991_i64));
        assert_eq!(Long::parse(Value::from(4_000_000_000_i64)).unwrap(), Long(4_000_000_000));
        assert_eq!(Long::parse(Value::String("-42".into())).unwrap(), Long(-42));
        assert!(Long::parse(Value::String("+42".into())).is_err());
        assert!(Long::parse(Value::String("1e6".into())).is_err());
        assert!(Long::parse(Value::from(1.5)).is_err());
    }
}
