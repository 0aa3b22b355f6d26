//! Upcasters: read old shapes of events as the current one.
//!
//! Events are never rewritten; an event stored as version N is read through
//! every upcaster from N up to the current version. Each upcaster is a plain
//! function on the JSON payload.

use serde_json::Value;

/// One step from `from_version` to `from_version + 1`.
struct Upcaster {
    aggregate_type: &'static str,
    event_type: &'static str,
    from_version: u32,
    step: fn(Value) -> Result<Value, String>,
}

const UPCASTERS: &[Upcaster] =
    &[Upcaster { aggregate_type: "Wallet", event_type: "PointsEarned", from_version: 1, step: points_earned_v1_to_v2 }];

/// `PointsEarned` v1 called the amount `amount` and predates policy versions;
/// every v1 event was earned under a store's first policy.
fn points_earned_v1_to_v2(payload: Value) -> Result<Value, String> {
    let Value::Object(mut map) = payload else {
        return Err("PointsEarned v1 payload is not an object".into());
    };
    let amount = map.remove("amount").ok_or("PointsEarned v1 payload has no amount")?;
    map.insert("amount_paid".into(), amount);
    map.entry("policy_version").or_insert(Value::from(1));
    Ok(Value::Object(map))
}

/// The upcaster that starts from `version` of this event type, if any.
fn step_from(aggregate_type: &str, event_type: &str, version: u32) -> Option<&'static Upcaster> {
    UPCASTERS
        .iter()
        .find(|u| u.aggregate_type == aggregate_type && u.event_type == event_type && u.from_version == version)
}

/// Whether a payload of `version` is older than its event type's current
/// shape: some upcaster starts from it.
pub fn applies(aggregate_type: &str, event_type: &str, version: u32) -> bool {
    step_from(aggregate_type, event_type, version).is_some()
}

/// Brings a stored payload to the current version of its event type.
pub fn upcast(aggregate_type: &str, event_type: &str, version: u32, mut payload: Value) -> Result<Value, String> {
    let mut version = version;
    while let Some(upcaster) = step_from(aggregate_type, event_type, version) {
        payload = (upcaster.step)(payload)?;
        version += 1;
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_earned_v1_gains_amount_paid_and_policy_version() {
        let v1 = serde_json::json!({"store": "s", "purchase_ref": "r", "amount": 1000, "points": 50});
        let v2 = upcast("Wallet", "PointsEarned", 1, v1).unwrap();
        assert_eq!(
            v2,
            serde_json::json!({"store": "s", "purchase_ref": "r", "amount_paid": 1000, "points": 50, "policy_version": 1})
        );
    }

    #[test]
    fn only_older_versions_need_upcasting() {
        assert!(applies("Wallet", "PointsEarned", 1));
        assert!(!applies("Wallet", "PointsEarned", 2));
        assert!(!applies("Wallet", "PointsRedeemed", 1));
        assert!(!applies("Store", "PointsEarned", 1));
    }

    #[test]
    fn current_versions_pass_through() {
        let v2 = serde_json::json!({"amount_paid": 1});
        assert_eq!(upcast("Wallet", "PointsEarned", 2, v2.clone()).unwrap(), v2);
    }

    #[test]
    fn a_v1_without_amount_is_an_error_not_a_panic() {
        assert!(upcast("Wallet", "PointsEarned", 1, serde_json::json!({"points": 1})).is_err());
    }
}
