//! Value types that can only be built valid.
//!
//! Every type here is constructed through a checked `parse`/`new`; serde goes
//! through the same check (`try_from`), so an invalid value can neither come in
//! through the API nor be read back from a stored event.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a raw value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValueError {
    /// The name of the value (`points`, `handle`, ...).
    pub field: &'static str,
    /// What is wrong with it, in words a user understands.
    pub reason: String,
}

impl ValueError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

fn check_token(field: &'static str, raw: &str, max: usize) -> Result<(), ValueError> {
    if raw.is_empty() {
        return Err(ValueError::new(field, "must not be empty"));
    }
    if raw.len() > max {
        return Err(ValueError::new(field, format!("must be at most {max} characters")));
    }
    if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ValueError::new(field, "may contain only letters, digits, '-' and '_'"));
    }
    Ok(())
}

fn check_text(field: &'static str, raw: &str, min: usize, max: usize) -> Result<(), ValueError> {
    let chars = raw.chars().count();
    if chars < min {
        return Err(ValueError::new(field, format!("must be at least {min} characters")));
    }
    if chars > max {
        return Err(ValueError::new(field, format!("must be at most {max} characters")));
    }
    if raw.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ValueError::new(field, "must not contain control characters"));
    }

    if min > 0 && raw.trim().is_empty() {
        return Err(ValueError::new(field, "must not be blank"));
    }
    Ok(())
}

/// Characters that change how text around them is shown without being seen
/// themselves: the bidirectional embeddings, overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069, which can make a name read as another),
/// directional marks, zero-width spaces and word joiners, the byte-order
/// mark, soft hyphens and the interlinear annotation marks. The zero-width
/// joiner and non-joiner (U+200C, U+200D) stay allowed: emoji sequences and
/// several scripts need them.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// Refuses text with an [invisible formatting character](is_invisible_format).
fn check_visible(field: &'static str, raw: &str) -> Result<(), ValueError> {
    match raw.chars().find(|c| is_invisible_format(*c)) {
        Some(c) => Err(ValueError::new(
            field,
            format!("must not contain invisible formatting characters (found U+{:04X})", u32::from(c)),
        )),
        None => Ok(()),
    }
}

/// Declares a string newtype whose `parse` applies `$check`; a text value
/// (`text`) also refuses invisible formatting characters when it is parsed,
/// but not when it is read back from a stored event, which may predate the rule.
macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident, $field:literal, text |$raw:ident| $check:expr) => {
        string_value!(@type $(#[$doc])* $name, |$raw| $check);

        impl $name {
            /// Checks `raw` as new input (invisible formatting characters
            /// refused) and wraps it.
            pub fn parse(raw: impl Into<String>) -> Result<Self, ValueError> {
                let raw: String = raw.into();
                check_visible($field, &raw)?;
                Self::read(raw)
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, |$raw:ident| $check:expr) => {
        string_value!(@type $(#[$doc])* $name, |$raw| $check);

        impl $name {
            /// Checks `raw` and wraps it.
            pub fn parse(raw: impl Into<String>) -> Result<Self, ValueError> {
                Self::read(raw.into())
            }
        }
    };
    (@type $(#[$doc:meta])* $name:ident, |$raw:ident| $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `raw` as stored values are checked when read back.
            fn read($raw: String) -> Result<Self, ValueError> {
                $check?;
                Ok(Self($raw))
            }

            /// The checked value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(raw: String) -> Result<Self, ValueError> {
                Self::read(raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_value!(
    /// A member's id (also the id of the member's wallet).
    MemberId, "member id", |raw| check_token("member id", &raw, 64)
);
string_value!(
    /// A store's id.
    StoreId, "store id", |raw| check_token("store id", &raw, 64)
);
string_value!(
    /// A post's id.
    PostId, "post id", |raw| check_token("post id", &raw, 64)
);
string_value!(
    /// One share (a distribution of points to one or more recipients).
    ShareId, "share id", |raw| check_token("share id", &raw, 64)
);
string_value!(
    /// A receipt or order number from the store's till; unique per store.
    PurchaseRef, "purchase ref", |raw| check_token("purchase ref", &raw, 64)
);
string_value!(
    /// A member's public handle: 3-30 lowercase letters, digits or '_'.
    Handle, "handle", |raw| {
        if !(3..=30).contains(&raw.len()) {
            Err(ValueError::new("handle", "must be 3 to 30 characters"))
        } else if !raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            Err(ValueError::new("handle", "may contain only lowercase letters, digits and '_'"))
        } else {
            Ok(())
        }
    }
);
string_value!(
    /// The name a member shows to others.
    DisplayName, "display name", text |raw| check_text("display name", &raw, 1, 80)
);
string_value!(
    /// A store's name.
    StoreName, "store name", text |raw| check_text("store name", &raw, 1, 120)
);
string_value!(
    /// A post's text.
    PostBody, "post body", text |raw| check_text("post body", &raw, 1, 5000)
);
string_value!(
    /// The note that goes with a share; may be empty.
    ShareMessage, "message", text |raw| check_text("message", &raw, 0, 280)
);
string_value!(
    /// Why an admin adjusted a balance, or what a redemption was for.
    Reason, "reason", text |raw| check_text("reason", &raw, 1, 500)
);
string_value!(
    /// An id or URL handed back by a social provider.
    ExternalRef, "external reference", text |raw| check_text("external reference", &raw, 1, 500)
);
string_value!(
    /// The storage key of an uploaded photo.
    PhotoKey, "photo key", |raw| {
        if raw.is_empty() || raw.len() > 200 {
            Err(ValueError::new("photo key", "must be 1 to 200 characters"))
        } else if raw.starts_with('/') || raw.contains("..") {
            Err(ValueError::new("photo key", "must be a relative key without '..'"))
        } else if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)) {
            Err(ValueError::new("photo key", "may contain only letters, digits, '-', '_', '.' and '/'"))
        } else {
            Ok(())
        }
    }
);

/// The largest number of points one movement may carry.
pub const MAX_POINTS: u64 = 1_000_000_000;

/// A positive number of points, at most [`MAX_POINTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Points(u64);

impl Points {
    /// Checks that `raw` is in `1..=MAX_POINTS`.
    pub fn new(raw: u64) -> Result<Self, ValueError> {
        if raw == 0 {
            Err(ValueError::new("points", "must be greater than zero"))
        } else if raw > MAX_POINTS {
            Err(ValueError::new("points", format!("must be at most {MAX_POINTS}")))
        } else {
            Ok(Self(raw))
        }
    }

    /// Parses a signed figure as it arrives from a client (negative is refused).
    pub fn from_i64(raw: i64) -> Result<Self, ValueError> {
        u64::try_from(raw).map_err(|_| ValueError::new("points", "must be greater than zero")).and_then(Self::new)
    }

    /// The number of points.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Points {
    type Error = ValueError;
    fn try_from(raw: u64) -> Result<Self, ValueError> {
        Self::new(raw)
    }
}

impl From<Points> for u64 {
    fn from(value: Points) -> u64 {
        value.0
    }
}

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The largest purchase amount accepted, in minor currency units.
pub const MAX_AMOUNT: u64 = 1_000_000_000_000;

/// A positive amount of money paid, in minor currency units (cents, won).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Amount(u64);

impl Amount {
    /// Checks that `raw` is in `1..=MAX_AMOUNT`.
    pub fn new(raw: u64) -> Result<Self, ValueError> {
        if raw == 0 {
            Err(ValueError::new("amount", "must be greater than zero"))
        } else if raw > MAX_AMOUNT {
            Err(ValueError::new("amount", format!("must be at most {MAX_AMOUNT}")))
        } else {
            Ok(Self(raw))
        }
    }

    /// The amount in minor units.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for Amount {
    type Error = ValueError;
    fn try_from(raw: u64) -> Result<Self, ValueError> {
        Self::new(raw)
    }
}

impl From<Amount> for u64 {
    fn from(value: Amount) -> u64 {
        value.0
    }
}

/// A signed, non-zero correction of a balance made by an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Adjustment(i64);

impl Adjustment {
    /// Checks that `raw` is non-zero and its size at most [`MAX_POINTS`].
    pub fn new(raw: i64) -> Result<Self, ValueError> {
        if raw == 0 {
            Err(ValueError::new("adjustment", "must not be zero"))
        } else if raw.unsigned_abs() > MAX_POINTS {
            Err(ValueError::new("adjustment", format!("must be at most {MAX_POINTS} either way")))
        } else {
            Ok(Self(raw))
        }
    }

    /// The signed change.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Adjustment {
    type Error = ValueError;
    fn try_from(raw: i64) -> Result<Self, ValueError> {
        Self::new(raw)
    }
}

impl From<Adjustment> for i64 {
    fn from(value: Adjustment) -> i64 {
        value.0
    }
}

/// How a store turns money spent into points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawEarnPolicy", into = "RawEarnPolicy")]
pub struct EarnPolicy {
    rate_basis_points: u32,
    cap: Option<Points>,
    min_purchase: u64,
}

#[derive(Serialize, Deserialize)]
struct RawEarnPolicy {
    rate_basis_points: u32,
    cap: Option<Points>,
    min_purchase: u64,
}

impl TryFrom<RawEarnPolicy> for EarnPolicy {
    type Error = ValueError;
    fn try_from(raw: RawEarnPolicy) -> Result<Self, ValueError> {
        Self::new(raw.rate_basis_points, raw.cap, raw.min_purchase)
    }
}

impl From<EarnPolicy> for RawEarnPolicy {
    fn from(p: EarnPolicy) -> Self {
        Self { rate_basis_points: p.rate_basis_points, cap: p.cap, min_purchase: p.min_purchase }
    }
}

impl EarnPolicy {
    /// `rate_basis_points` of the amount paid (500 = 5%), at most `cap` points a
    /// purchase, nothing for purchases below `min_purchase`.
    pub fn new(rate_basis_points: u32, cap: Option<Points>, min_purchase: u64) -> Result<Self, ValueError> {
        if !(1..=10_000).contains(&rate_basis_points) {
            return Err(ValueError::new("earn rate", "must be 1 to 10000 basis points (0.01% to 100%)"));
        }
        if min_purchase > MAX_AMOUNT {
            return Err(ValueError::new("minimum purchase", format!("must be at most {MAX_AMOUNT}")));
        }
        Ok(Self { rate_basis_points, cap, min_purchase })
    }

    /// The rate in basis points.
    pub fn rate_basis_points(&self) -> u32 {
        self.rate_basis_points
    }

    /// The per-purchase cap, if any.
    pub fn cap(&self) -> Option<Points> {
        self.cap
    }

    /// The smallest purchase that earns.
    pub fn min_purchase(&self) -> u64 {
        self.min_purchase
    }

    /// The points a purchase of `amount` earns, or `None` when it earns nothing
    /// (below the minimum, or rounding to zero).
    pub fn points_for(&self, amount: Amount) -> Option<Points> {
        if amount.get() < self.min_purchase {
            return None;
        }
        let raw = u128::from(amount.get()) * u128::from(self.rate_basis_points) / 10_000;
        let raw = u64::try_from(raw).unwrap_or(u64::MAX).min(MAX_POINTS);
        let capped = match self.cap {
            Some(cap) => raw.min(cap.get()),
            None => raw,
        };
        Points::new(capped).ok()
    }
}

/// A social network posts can be cross-posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Provider {
    /// Facebook Graph API.
    Facebook,
    /// Twitter API v2.
    Twitter,
    /// Mastodon (any instance): exactly-once through `Idempotency-Key`.
    Mastodon,
    /// Bluesky (AT Protocol): exactly-once through a record key of the post's own.
    Bluesky,
}

impl Provider {
    /// Every network, in order.
    pub const ALL: [Provider; 4] = [Provider::Facebook, Provider::Twitter, Provider::Mastodon, Provider::Bluesky];

    /// Whether a repeated call cannot publish twice there (the network takes
    /// a key of the caller's choosing and refuses or answers a repeat).
    pub fn exactly_once(self) -> bool {
        matches!(self, Provider::Mastodon | Provider::Bluesky)
    }
}

impl Provider {
    /// Its name in read models, metrics and URLs.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Facebook => "facebook",
            Provider::Twitter => "twitter",
            Provider::Mastodon => "mastodon",
            Provider::Bluesky => "bluesky",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Provider {
    type Err = ValueError;

    fn from_str(name: &str) -> Result<Self, ValueError> {
        Provider::ALL
            .into_iter()
            .find(|provider| provider.name() == name)
            .ok_or_else(|| ValueError { field: "provider", reason: format!("no network is called {name:?}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_text_refuses_invisible_formatting_but_stored_text_is_still_read() {
        for spoof in ["ann\u{202E}nimda", "a\u{2066}b", "zero\u{200B}width", "\u{FEFF}bom"] {
            assert!(DisplayName::parse(spoof).is_err(), "{spoof:?}");
            assert!(PostBody::parse(spoof).is_err(), "{spoof:?}");
            let stored: DisplayName = serde_json::from_value(serde_json::json!(spoof)).expect("read back as stored");
            assert_eq!(stored.as_str(), spoof);
        }
        // Joiners are part of emoji sequences and several scripts.
        assert!(PostBody::parse("family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}").is_ok());
        assert!(DisplayName::parse("\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}").is_ok());
    }

    #[test]
    fn points_refuse_zero_negative_and_huge() {
        assert!(Points::new(0).is_err());
        assert!(Points::from_i64(-5).is_err());
        assert!(Points::new(MAX_POINTS + 1).is_err());
        assert_eq!(Points::new(7).map(Points::get), Ok(7));
    }

    #[test]
    fn ids_refuse_empty_long_and_odd_characters() {
        assert!(MemberId::parse("").is_err());
        assert!(MemberId::parse("a".repeat(65)).is_err());
        assert!(MemberId::parse("bob smith").is_err());
        assert!(MemberId::parse("bob_smith-1").is_ok());
    }

    #[test]
    fn handles_are_lowercase_words() {
        assert!(Handle::parse("Bob").is_err());
        assert!(Handle::parse("bo").is_err());
        assert!(Handle::parse("bob_1").is_ok());
    }

    #[test]
    fn deserializing_goes_through_the_same_check() {
        assert!(serde_json::from_str::<Points>("0").is_err());
        assert!(serde_json::from_str::<Handle>("\"NOPE\"").is_err());
        assert!(serde_json::from_str::<PhotoKey>("\"../etc/passwd\"").is_err());
    }

    #[test]
    fn earn_policy_applies_rate_cap_and_minimum() {
        let policy = EarnPolicy::new(500, Points::new(100).ok(), 1_000).unwrap();
        assert_eq!(policy.points_for(Amount::new(999).unwrap()), None);
        assert_eq!(policy.points_for(Amount::new(1_000).unwrap()), Points::new(50).ok());
        assert_eq!(policy.points_for(Amount::new(1_000_000).unwrap()), Points::new(100).ok());
        assert!(EarnPolicy::new(0, None, 0).is_err());
        assert!(EarnPolicy::new(10_001, None, 0).is_err());
    }
}
