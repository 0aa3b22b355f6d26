//! `docs/events.md` against the code, so the event model cannot drift: the
//! document names every event the domain writes, with its current version
//! and every field of its payload, and names no event that does not exist.
//!
//! Nothing here lists the events by hand. One command for each event runs
//! on a scratch store, which writes every event as it is stored (its type,
//! version and payload, encoded by the event store from the domain's own
//! `event_type`, `event_version` and serde shape); serde's own list of each
//! event enum's variants proves that the run wrote every event there is. A
//! new variant fails here until a command below writes it and the document
//! names it; a new field fails until the document names it.

use std::collections::{BTreeMap, BTreeSet};

use domain::post::Photo;
use domain::values::{
    Adjustment, Amount, DisplayName, EarnPolicy, ExternalRef, Handle, MemberId, PhotoKey, Points, PostBody, PostId,
    Provider, PurchaseRef, Reason, ShareId, ShareMessage, StoreId, StoreName,
};
use domain::wallet::SharePart;
use domain::{
    Member, MemberCommand, MemberEvent, Post, PostCommand, PostEvent, SocialOutcome, Store, StoreCommand, StoreEvent,
    Wallet, WalletCommand, WalletEvent,
};
use eventstore::scratch::ScratchDatabase;
use eventstore::{CommandContext, EventStore, EventStoreConfig, Model, upcast};
use serde_json::Value;

const DOCUMENT: &str = "docs/events.md";

/// Each aggregate (its section in the document) and the variants of its
/// event enum, as serde knows them.
fn aggregates() -> [(&'static str, &'static [&'static str]); 4] {
    [
        ("Store", variants::<StoreEvent>()),
        ("Member", variants::<MemberEvent>()),
        ("Wallet", variants::<WalletEvent>()),
        ("Post", variants::<PostEvent>()),
    ]
}

/// The names of an enum's variants: its derived `Deserialize` hands them to
/// `deserialize_enum`, which keeps them and reads nothing.
fn variants<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Variants(&'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for &mut Variants {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not an enum"))
        }

        fn deserialize_enum<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = variants;
            Err(serde::de::Error::custom("variants read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
        }
    }

    let mut found = Variants(&[]);
    let _ = T::deserialize(&mut found);
    assert!(!found.0.is_empty(), "{} is an enum with variants", std::any::type_name::<T>());
    found.0
}

/// An event as the code writes it.
#[derive(Debug)]
struct Written {
    aggregate: String,
    version: u32,
    /// The payload's own field names.
    fields: BTreeSet<String>,
    /// Field names of the objects inside the payload (a policy, a photo ...).
    nested: BTreeSet<String>,
}

fn ok<T, E: std::fmt::Debug>(value: Result<T, E>) -> T {
    value.expect("a valid literal")
}

fn member(id: &str) -> MemberId {
    ok(MemberId::parse(id))
}

fn cafe() -> StoreId {
    ok(StoreId::parse("cafe"))
}

fn points(raw: u64) -> Points {
    ok(Points::new(raw))
}

fn reason(text: &str) -> Reason {
    ok(Reason::parse(text))
}

fn photo(key: &str) -> Photo {
    Photo { key: ok(PhotoKey::parse(key)), content_type: "image/jpeg".into(), size: 1_024, sha256: "ab".repeat(32) }
}

async fn run<A: Model>(store: &EventStore, id: &str, command: A::Command) {
    store.execute::<A>(id, command, CommandContext::default()).await.unwrap_or_else(|e| panic!("{id}: {e:?}"));
}

/// Runs one command for each event (some write two), and returns every event
/// type the log then holds, as stored.
async fn write_every_event() -> BTreeMap<String, Written> {
    let db = ScratchDatabase::sqlite();
    let config = EventStoreConfig { follow_interval: std::time::Duration::from_secs(3600), ..Default::default() };
    let store = EventStore::open(&db.url, config).await.expect("the scratch store opens");

    for id in ["ann", "bob", "cat"] {
        let register = MemberCommand::Register {
            member: member(id),
            handle: ok(Handle::parse(id)),
            display_name: ok(DisplayName::parse(id.to_uppercase())),
        };
        run::<Member>(&store, id, register).await;
    }
    let facebook = Provider::Facebook;
    let external_id = || ok(ExternalRef::parse("10001"));
    let url = || ok(ExternalRef::parse("https://example.com/10001"));
    run::<Member>(
        &store,
        "ann",
        MemberCommand::LinkSocialAccount {
            provider: facebook,
            external_id: external_id(),
            instance: Some(ok(ExternalRef::parse("https://mastodon.example"))),
            link: Some(ok(ExternalRef::parse("link-1"))),
        },
    )
    .await;
    let mark = MemberCommand::MarkNeedsRelink {
        provider: facebook,
        link: Some(ok(ExternalRef::parse("link-1"))),
        reason: reason("the refresh was refused"),
    };
    run::<Member>(&store, "ann", mark).await;
    run::<Member>(&store, "ann", MemberCommand::UnlinkSocialAccount { provider: facebook }).await;

    let policy = ok(EarnPolicy::new(1_000, Some(points(500)), 100));
    let register =
        StoreCommand::Register { store: cafe(), name: ok(StoreName::parse("The Cafe")), owner: member("ann"), policy };
    run::<Store>(&store, "cafe", register).await;
    run::<Store>(&store, "cafe", StoreCommand::UpdateEarnPolicy { policy }).await;
    run::<Store>(&store, "cafe", StoreCommand::Close).await;
    run::<Store>(&store, "cafe", StoreCommand::Reopen).await;

    let earn = WalletCommand::Earn {
        member: member("bob"),
        store: cafe(),
        purchase_ref: ok(PurchaseRef::parse("r1")),
        amount: ok(Amount::new(5_000)),
    };
    run::<Wallet>(&store, "bob", earn).await;
    let share = ok(ShareId::parse("s1"));
    let recipients = ["ann", "cat"].map(|id| SharePart { member: member(id), points: points(10) }).to_vec();
    let message = ok(ShareMessage::parse("Coffee on me"));
    run::<Wallet>(&store, "bob", WalletCommand::Share { share: share.clone(), store: cafe(), recipients, message })
        .await;
    let receive = WalletCommand::ReceiveShared {
        member: member("ann"),
        share: share.clone(),
        from: member("bob"),
        store: cafe(),
        points: points(10),
    };
    run::<Wallet>(&store, "ann", receive).await;
    run::<Member>(&store, "cat", MemberCommand::Deactivate).await;
    run::<Wallet>(&store, "bob", WalletCommand::RefundShare { share, recipient: member("cat") }).await;
    let redeem = WalletCommand::Redeem { store: cafe(), points: points(5), reward: reason("A croissant") };
    run::<Wallet>(&store, "bob", redeem).await;
    let adjust = WalletCommand::Adjust {
        member: member("bob"),
        store: cafe(),
        adjustment: ok(Adjustment::new(-5)),
        reason: reason("Till error"),
    };
    run::<Wallet>(&store, "bob", adjust).await;
    run::<Wallet>(&store, "bob", WalletCommand::Expire { store: cafe(), points: points(5) }).await;

    let create = PostCommand::Create {
        post: ok(PostId::parse("p1")),
        author: member("ann"),
        store: cafe(),
        body: ok(PostBody::parse("Flat white")),
        photos: vec![photo("photos/first.jpg")],
        providers: vec![Provider::Twitter, facebook],
    };
    run::<Post>(&store, "p1", create).await;
    let later = photo("photos/later.jpg");
    run::<Post>(&store, "p1", PostCommand::AddPhoto { photo: later.clone() }).await;
    let failed = || SocialOutcome::Failed { reason: reason("rate limited"), attempt: 1 };
    let published = || SocialOutcome::Published { external_id: external_id(), url: url() };
    for outcome in [failed(), published()] {
        run::<Post>(&store, "p1", PostCommand::RecordSocialResult { provider: facebook, outcome }).await;
    }
    for outcome in [failed(), published()] {
        let record = PostCommand::RecordPhotoResult { photo: later.key.clone(), provider: facebook, outcome };
        run::<Post>(&store, "p1", record).await;
    }
    let waiting = || SocialOutcome::NeedsRelink { reason: reason("the account needs linking again") };
    run::<Post>(&store, "p1", PostCommand::RecordSocialResult { provider: Provider::Twitter, outcome: waiting() })
        .await;
    let record =
        PostCommand::RecordPhotoResult { photo: later.key.clone(), provider: Provider::Twitter, outcome: waiting() };
    run::<Post>(&store, "p1", record).await;
    run::<Post>(&store, "p1", PostCommand::Delete).await;

    let mut written = BTreeMap::new();
    for event in store.read_stored(0, 1_000).await.expect("the log reads") {
        let payload: Value = serde_json::from_str(&event.payload).expect("a stored payload is JSON");
        let mut fields = BTreeSet::new();
        let mut nested = BTreeSet::new();
        match &payload {
            Value::Object(map) => {
                for (key, value) in map {
                    fields.insert(key.clone());
                    keys_within(value, &mut nested);
                }
            }
            Value::Null => {}
            other => panic!("{}: a payload is an object or null, not {other}", event.event_type),
        }
        let entry = written.entry(event.event_type.clone()).or_insert_with(|| Written {
            aggregate: event.aggregate_type.clone(),
            version: event.event_version,
            fields: BTreeSet::new(),
            nested: BTreeSet::new(),
        });
        assert_eq!(entry.version, event.event_version, "{} is written at one version", event.event_type);
        entry.fields.extend(fields);
        entry.nested.extend(nested);
    }
    written
}

/// Every object key anywhere inside `value`.
fn keys_within(value: &Value, keys: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                keys.insert(key.clone());
                keys_within(inner, keys);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| keys_within(item, keys)),
        _ => {}
    }
}

/// The words inside `code spans` of `text`: "`policy`: `{cap, min}`" gives
/// policy, cap and min.
fn code_words(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| span.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

/// The first `code span` of `text`.
fn first_code(text: &str) -> Option<&str> {
    text.split('`').nth(1)
}

/// One row of a table in the document.
#[derive(Debug)]
struct Row {
    line: usize,
    section: String,
    cells: Vec<String>,
}

/// The document's sections' text, by heading, and the rows of its tables
/// whose header is `header`.
struct Document {
    sections: BTreeMap<String, String>,
    tables: BTreeMap<Vec<String>, Vec<Row>>,
}

fn read_document() -> Document {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOCUMENT);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut sections = BTreeMap::<String, String>::new();
    let mut tables = BTreeMap::<Vec<String>, Vec<Row>>::new();
    let mut section = String::new();
    let mut header: Option<Vec<String>> = None;
    for (index, line) in text.lines().enumerate() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading.trim().to_string();
        }
        sections.entry(section.clone()).or_default().push_str(&format!("{line}\n"));
        let Some(inner) = line.trim().strip_prefix('|').and_then(|l| l.strip_suffix('|')) else {
            header = None;
            continue;
        };
        let cells: Vec<String> = inner.split('|').map(|cell| cell.trim().to_string()).collect();
        match &header {
            None => header = Some(cells),
            Some(_) if cells.iter().all(|cell| cell.chars().all(|c| c == '-' || c == ':')) => {}
            Some(names) => {
                tables.entry(names.clone()).or_default().push(Row { line: index + 1, section: section.clone(), cells })
            }
        }
    }
    Document { sections, tables }
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_md_names_every_event_with_its_version_and_fields() {
    let written = write_every_event().await;
    let document = read_document();
    let mut problems = Vec::new();

    for (aggregate, variants) in aggregates() {
        for variant in variants {
            match written.get(*variant) {
                None => problems.push(format!(
                    "{aggregate}'s event {variant} was not written: add a command for it to write_every_event"
                )),
                Some(event) if event.aggregate != aggregate => {
                    problems.push(format!("{variant} was written by {}, not {aggregate}", event.aggregate))
                }
                Some(_) => {}
            }
        }
    }
    let aggregate_of: BTreeMap<&str, &str> = aggregates()
        .into_iter()
        .flat_map(|(aggregate, variants)| variants.iter().map(move |variant| (*variant, aggregate)))
        .collect();
    for (event_type, event) in &written {
        assert!(aggregate_of.contains_key(event_type.as_str()), "{event_type} ({}) is an event", event.aggregate);
    }

    let rows = document.tables.get(&header(&["event", "version", "payload", "written by"]));
    let rows = rows.map(Vec::as_slice).unwrap_or_default();
    let mut documented = BTreeMap::<String, &Row>::new();
    for row in rows {
        let place = format!("{DOCUMENT}:{}", row.line);
        let Some(name) = first_code(&row.cells[0]) else {
            problems.push(format!("{place}: the event's name is not `code`"));
            continue;
        };
        match aggregate_of.get(name) {
            None => problems.push(format!("{place}: there is no event {name}")),
            Some(aggregate) if *aggregate != row.section => {
                problems.push(format!("{place}: {name} is a {aggregate} event, not under {}", row.section))
            }
            Some(_) => {}
        }
        if documented.insert(name.to_string(), row).is_some() {
            problems.push(format!("{place}: {name} is listed twice"));
        }
    }

    for (name, event) in &written {
        let Some(row) = documented.get(name) else {
            problems.push(format!("{DOCUMENT} does not list {name} (a {} event)", event.aggregate));
            continue;
        };
        let place = format!("{DOCUMENT}:{}", row.line);
        let version = row.cells[1].replace('*', "");
        if version.trim().parse::<u32>() != Ok(event.version) {
            problems.push(format!("{place}: {name} is at version {}, not {version}", event.version));
        }
        let payload = &row.cells[2];
        if event.fields.is_empty() && payload != "none" {
            problems.push(format!("{place}: {name} has no fields, but its payload says {payload}, not none"));
        }
        let named = code_words(payload);
        for field in event.fields.difference(&named) {
            problems.push(format!("{place}: {name}'s field `{field}` is not named in its payload"));
        }
        let section = code_words(document.sections.get(&row.section).map_or("", String::as_str));
        for field in event.nested.difference(&section) {
            problems.push(format!("{place}: `{field}`, within {name}'s payload, is not named under {}", row.section));
        }
    }

    let upcasting = document.tables.get(&header(&["event", "versions", "upcaster"]));
    let upcasting = upcasting.map(Vec::as_slice).unwrap_or_default();
    let mut upcast_events = BTreeSet::new();
    for row in upcasting {
        let place = format!("{DOCUMENT}:{}", row.line);
        let Some(name) = first_code(&row.cells[0]) else {
            problems.push(format!("{place}: the event's name is not `code`"));
            continue;
        };
        upcast_events.insert(name.to_string());
        if !aggregate_of.contains_key(name) {
            problems.push(format!("{place}: there is no event {name}"));
        }
        let Some(event) = written.get(name) else { continue };
        let listed: Vec<String> = row.cells[1].replace('*', "").split(',').map(|v| v.trim().to_string()).collect();
        let expected: Vec<String> = (1..=event.version).map(|v| v.to_string()).collect();
        if listed != expected {
            problems.push(format!("{place}: {name}'s versions are {}, not {}", expected.join(", "), listed.join(", ")));
        }
    }
    for (name, event) in &written {
        if event.version > 1 && !upcast_events.contains(name) {
            problems.push(format!("{DOCUMENT}: {name} is at version {} but has no row under upcasting", event.version));
        }
        for version in 1..event.version {
            if !upcast::applies(&event.aggregate, name, version) {
                problems.push(format!("{name} v{version} has no upcaster in eventstore/src/upcast.rs"));
            }
        }
        assert!(!upcast::applies(&event.aggregate, name, event.version), "{name} v{} is current", event.version);
    }

    assert!(problems.is_empty(), "{DOCUMENT} does not match the events the code writes:\n{}", problems.join("\n"));
}
