//! The load a fault lands in: client threads issuing `earnPoints`,
//! `redeemPoints`, `sharePoints` and `createPost` (with or without a photo)
//! over real HTTP, each mutation under an idempotency key of its own. Each
//! client keeps what it learnt of every key: acknowledged, refused, never
//! sent, or in doubt (no answer, or an answer that cannot say). A mutation in
//! doubt is sometimes retried with the same key, as a careful client does:
//! the retry across a crash must not record it twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api::auth::Role;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::{Client, FilePart, Sending, Unanswered, multipart, token_of};

/// A JPEG (by its first bytes, which is all the content check reads) that
/// photo posts pad to the size they want.
const JPEG: &[u8] = include_bytes!("../fixtures/photo.jpg");

/// A small seeded generator (SplitMix64): the load and the fault schedule
/// of a run follow from the seed printed with its figures and failures.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    /// An independent generator, for another thread.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

/// Which mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Earn,
    Redeem,
    Share,
    Post,
    PhotoPost,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Earn, Kind::Redeem, Kind::Share, Kind::Post, Kind::PhotoPost];

    /// The event the command appends: one per command (a wallet's first
    /// earn also opens it with a `WalletOpened`).
    pub fn event(self) -> &'static str {
        match self {
            Kind::Earn => "PointsEarned",
            Kind::Redeem => "PointsRedeemed",
            Kind::Share => "PointsShared",
            Kind::Post | Kind::PhotoPost => "PostCreated",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Kind::Earn => "earnPoints",
            Kind::Redeem => "redeemPoints",
            Kind::Share => "sharePoints",
            Kind::Post | Kind::PhotoPost => "createPost",
        }
    }
}

/// What a client learnt of a mutation over all its attempts; a later
/// attempt's outcome counts when it says more (the order of the variants).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// No attempt reached the server (it was down each time).
    NotSent,
    /// Refused with this code: nothing may be recorded.
    Refused(String),
    /// No answer, or one that cannot say whether it was recorded.
    InDoubt(String),
    /// Recorded: the answer said so (with its position, or
    /// `NOT_YET_VISIBLE`, recorded but not yet readable).
    Acknowledged,
}

/// One mutation a client sent.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The client's idempotency key.
    pub key: String,
    pub kind: Kind,
    pub outcome: Outcome,
    pub attempts: u32,
}

/// What one client did.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Its token's subject, which scopes its keys.
    pub subject: String,
    pub mutations: Vec<Mutation>,
    /// How often each error code (or failure to get an answer) was seen.
    pub answers: BTreeMap<String, u64>,
    /// Answers that break the API's promises (an error without a code, an
    /// HTTP status a GraphQL request must not get): each one fails the test.
    pub anomalies: Vec<String>,
}

impl Ledger {
    /// The command id the server records for `key`: the key scoped by the
    /// first 16 bytes of SHA-256 of the subject, in hex (`scoped_key`).
    pub fn command_id(&self, key: &str) -> String {
        format!("{}/{key}", hex::encode(&Sha256::digest(self.subject.as_bytes())[..16]))
    }
}

/// What load a client makes.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Relative weights of earn, redeem, share, post and photo post (in the
    /// order of [`Kind::ALL`]).
    pub weights: [u64; 5],
    /// How requests go out (a slow client sends its uploads in paced pieces).
    pub sending: Sending,
    /// The sizes photos are padded to, in bytes.
    pub photo_bytes: (usize, usize),
}

impl Profile {
    /// Every kind of mutation but photo posts.
    pub fn mixed() -> Profile {
        Profile { weights: [4, 2, 2, 2, 0], sending: Sending::default(), photo_bytes: (0, 0) }
    }

    /// Photo posts only, the photos `bytes` long (a range), sent in pieces of
    /// `piece` bytes `pause` apart.
    pub fn uploader(bytes: (usize, usize), piece: usize, pause: Duration) -> Profile {
        Profile {
            weights: [0, 0, 0, 0, 1],
            sending: Sending { piece, pause, ..Sending::default() },
            photo_bytes: bytes,
        }
    }
}

/// What an attempt was answered, as the answer log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Acknowledged,
    InDoubt,
    Refused,
}

/// Answers as they arrive, for recovery times, for knowing that the load
/// flows (or that a fault is felt) and for how many mutations a fault
/// caught in flight.
#[derive(Default)]
pub struct Answers(Mutex<Vec<(Instant, Kind, Answer)>>);

impl Answers {
    fn push(&self, kind: Kind, answer: Answer) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), kind, answer));
    }

    /// When each `answer` to a mutation of `kinds` (any kind if empty)
    /// arrived after `since`, oldest first.
    pub fn after(&self, since: Instant, kinds: &[Kind], answer: Answer) -> Vec<Instant> {
        let answers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .iter()
            .filter(|(at, kind, a)| *a == answer && *at > since && (kinds.is_empty() || kinds.contains(kind)))
            .map(|a| a.0)
            .collect()
    }

    /// How many attempts ended in doubt between `from` and `to`.
    pub fn doubts_between(&self, from: Instant, to: Instant) -> usize {
        self.after(from, &[], Answer::InDoubt).into_iter().filter(|at| *at <= to).count()
    }
}

/// Client threads running until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Ledger>>,
    pub answers: Arc<Answers>,
}

impl Load {
    /// One client thread per profile, client `i` acting as member `m{i}`
    /// (sharing with `m{i+1}`, modulo `members`) at store `cafe`, as an
    /// admin whose subject is its own.
    pub fn start(client: &Client, profiles: &[Profile], members: usize, rng: &mut Rng) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Answers::default());
        let threads = profiles
            .iter()
            .enumerate()
            .map(|(i, profile)| {
                let worker = Worker {
                    index: i,
                    member: format!("m{}", i % members),
                    friend: format!("m{}", (i + 1) % members),
                    profile: *profile,
                    client: client.clone(),
                    rng: rng.fork(),
                    stop: stop.clone(),
                    answers: answers.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || worker.run())
                    .expect("a client thread")
            })
            .collect();
        Load { stop, threads, answers }
    }

    /// Waits until `count` mutations of `kinds` (any if empty) have been
    /// acknowledged after `since`; returns when the first of them was.
    pub fn wait_acks(&self, since: Instant, count: usize, kinds: &[Kind], deadline: Duration, what: &str) -> Instant {
        self.wait_for(since, count, kinds, Answer::Acknowledged, deadline, what)
    }

    /// Waits until `count` attempts at mutations of `kinds` (any if empty)
    /// have been answered `answer` after `since`; returns when the first was.
    pub fn wait_for(
        &self,
        since: Instant,
        count: usize,
        kinds: &[Kind],
        answer: Answer,
        deadline: Duration,
        what: &str,
    ) -> Instant {
        let end = Instant::now() + deadline;
        loop {
            let answered = self.answers.after(since, kinds, answer);
            if answered.len() >= count {
                return answered[0];
            }
            assert!(
                Instant::now() < end,
                "{what}: {} of {count} {answer:?} answers within {deadline:?}",
                answered.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients (each finishes the request it is in) and returns
    /// their ledgers.
    pub fn stop(mut self) -> Vec<Ledger> {
        self.stop.store(true, Ordering::SeqCst);
        std::mem::take(&mut self.threads)
            .into_iter()
            .map(|t| t.join().expect("a client thread ran to the end"))
            .collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A failing test must not leave clients hammering a port.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A request, kept as sent so that a retry is the same request.
enum Request {
    Json(String),
    Multipart(String, Vec<u8>),
}

struct Worker {
    index: usize,
    member: String,
    friend: String,
    profile: Profile,
    client: Client,
    rng: Rng,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
}

impl Worker {
    fn run(mut self) -> Ledger {
        let subject = format!("faults-client-{}", self.index);
        let bearer = format!("Bearer {}", token_of(&subject, Role::Admin, None, None));
        let mut ledger = Ledger { subject, ..Ledger::default() };
        let mut retry: Option<(Mutation, Request)> = None;
        let mut n = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let (mut mutation, request) = match retry.take() {
                Some(again) => again,
                None => {
                    n += 1;
                    self.next_mutation(format!("c{}-{n}", self.index))
                }
            };
            mutation.attempts += 1;
            let outcome = self.send(&bearer, &mutation, &request, &mut ledger);
            match outcome {
                Outcome::Acknowledged => self.answers.push(mutation.kind, Answer::Acknowledged),
                Outcome::InDoubt(_) => self.answers.push(mutation.kind, Answer::InDoubt),
                Outcome::Refused(_) => self.answers.push(mutation.kind, Answer::Refused),
                Outcome::NotSent => {}
            }
            let unsure = matches!(outcome, Outcome::InDoubt(_) | Outcome::NotSent);
            if matches!(outcome, Outcome::NotSent) {
                // The server is down: a client backs off a little.
                std::thread::sleep(Duration::from_millis(10));
            }
            mutation.outcome = mutation.outcome.clone().max(outcome);
            if unsure && mutation.attempts < 4 && self.rng.one_in(2) {
                retry = Some((mutation, request));
            } else {
                ledger.mutations.push(mutation);
            }
        }
        if let Some((mutation, _)) = retry {
            ledger.mutations.push(mutation);
        }
        ledger
    }

    fn next_mutation(&mut self, key: String) -> (Mutation, Request) {
        let total: u64 = self.profile.weights.iter().sum();
        let mut pick = self.rng.between(1, total);
        let mut kind = Kind::Earn;
        for (candidate, weight) in Kind::ALL.iter().zip(self.profile.weights) {
            if pick <= weight {
                kind = *candidate;
                break;
            }
            pick -= weight;
        }
        let (member, friend) = (&self.member, &self.friend);
        let json = |query: &str, variables: Value| {
            Request::Json(json!({ "query": query, "variables": variables }).to_string())
        };
        let request = match kind {
            Kind::Earn => json(
                "mutation($m: String!, $ref: String!, $amount: Long!, $key: String!) { earnPoints(member: $m, \
                 store: \"cafe\", purchaseRef: $ref, amount: $amount, idempotencyKey: $key) { position replayed } }",
                json!({ "m": member, "ref": key, "amount": self.rng.between(100, 2_000), "key": key }),
            ),
            Kind::Redeem => json(
                "mutation($m: String!, $points: Int!, $key: String!) { redeemPoints(member: $m, store: \"cafe\", \
                 points: $points, reward: \"coffee\", idempotencyKey: $key) { position replayed } }",
                json!({ "m": member, "points": self.rng.between(1, 40), "key": key }),
            ),
            Kind::Share => json(
                "mutation($from: String!, $to: String!, $points: Int!, $key: String!) { sharePoints(from: $from, \
                 store: \"cafe\", recipients: [{ member: $to, points: $points }], message: \"thanks\", \
                 idempotencyKey: $key) { position replayed } }",
                json!({ "from": member, "to": friend, "points": self.rng.between(1, 20), "key": key }),
            ),
            Kind::Post => json(
                "mutation($author: String!, $body: String!, $key: String!) { createPost(author: $author, \
                 store: \"cafe\", body: $body, idempotencyKey: $key) { position replayed } }",
                json!({ "author": member, "body": format!("post {key}"), "key": key }),
            ),
            Kind::PhotoPost => {
                let (low, high) = self.profile.photo_bytes;
                let size = self.rng.between(low.max(JPEG.len()) as u64, high.max(JPEG.len()) as u64) as usize;
                let mut photo = JPEG.to_vec();
                photo.resize(size, 0);
                let query = "mutation($author: String!, $body: String!, $key: String!, $photos: [Upload!]!) { \
                             createPost(author: $author, store: \"cafe\", body: $body, photos: $photos, \
                             idempotencyKey: $key) { position replayed } }";
                let variables =
                    json!({ "author": member, "body": format!("photo {key}"), "key": key, "photos": [null] });
                let file = FilePart { field: "0", filename: "photo.jpg", content_type: "image/jpeg", bytes: &photo };
                let (content_type, body) = multipart(query, variables, json!({ "0": ["variables.photos.0"] }), &[file]);
                Request::Multipart(content_type, body)
            }
        };
        (Mutation { key, kind, outcome: Outcome::NotSent, attempts: 0 }, request)
    }

    /// One attempt; what it says of the mutation.
    fn send(&self, bearer: &str, mutation: &Mutation, request: &Request, ledger: &mut Ledger) -> Outcome {
        let (content_type, body) = match request {
            Request::Json(body) => ("application/json", body.as_bytes()),
            Request::Multipart(content_type, body) => (content_type.as_str(), body.as_slice()),
        };
        let headers = [("Content-Type", content_type), ("Authorization", bearer)];
        let mut count = |what: &str| *ledger.answers.entry(what.to_string()).or_default() += 1;
        let reply = match self.client.try_exchange("POST", "/graphql", &headers, body, self.profile.sending) {
            Ok(reply) => reply,
            Err(Unanswered::NotSent(_)) => {
                count("no connection");
                return Outcome::NotSent;
            }
            Err(Unanswered::Lost(why)) => {
                count("no answer");
                return Outcome::InDoubt(why);
            }
        };
        let answer: Option<Value> = serde_json::from_str(&reply.body).ok();
        let Some(answer) = answer.filter(|_| reply.status == 200) else {
            count(&format!("HTTP {}", reply.status));
            ledger.anomalies.push(format!(
                "{} {}: HTTP {}: {}",
                mutation.kind.field(),
                mutation.key,
                reply.status,
                reply.body
            ));
            return Outcome::InDoubt(format!("HTTP {}", reply.status));
        };
        if answer["data"][mutation.kind.field()]["position"].is_u64() {
            count("acknowledged");
            return Outcome::Acknowledged;
        }
        let Some(code) = answer["errors"][0]["extensions"]["code"].as_str() else {
            count("an error without a code");
            ledger.anomalies.push(format!(
                "{} {}: an error without a code: {answer}",
                mutation.kind.field(),
                mutation.key
            ));
            return Outcome::InDoubt("an error without a code".into());
        };
        count(code);
        match code {
            "NOT_YET_VISIBLE" => Outcome::Acknowledged,
            "OUTCOME_UNKNOWN" => Outcome::InDoubt(code.into()),
            "INTERNAL" => Outcome::InDoubt(code.into()),
            "IDEMPOTENCY_KEY_REUSED" => {
                // Every retry repeats its request byte for byte.
                ledger.anomalies.push(format!(
                    "{} {}: a retry was taken for another command: {answer}",
                    mutation.kind.field(),
                    mutation.key
                ));
                Outcome::Refused(code.into())
            }
            code => Outcome::Refused(code.into()),
        }
    }
}
