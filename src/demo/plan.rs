//! What the demo writes, decided before anything is written: every command
//! with its aggregate and its command id, made from fixed tables and a
//! seeded generator, so that every run plans exactly the same commands (which
//! is what makes a second run a no-op: each command id comes back with the
//! same content).
//!
//! The plan keeps its own books: every debit (share, redemption, negative
//! adjustment) is drawn from points its wallet earned in the plan's
//! purchases, so no command can be refused for want of points, whatever
//! order the concurrent load runs them in. Points received from shares are
//! left out of those books: they arrive only after the load, through the
//! share distribution.

use std::collections::{BTreeMap, BTreeSet};

use domain::values::{
    Adjustment, Amount, DisplayName, EarnPolicy, Handle, MemberId, Points, PostBody, PostId, Provider, PurchaseRef,
    Reason, ShareId, ShareMessage, StoreId, StoreName,
};
use domain::{MemberCommand, SharePart, StoreCommand, WalletCommand};

/// One command of the plan: the aggregate it runs on, the command, and the
/// command id's tail (`demo/{key}`).
#[derive(Debug, Clone)]
pub struct Job<C> {
    /// The aggregate's id.
    pub id: String,
    /// The command.
    pub command: C,
    /// The command id, without its `demo/` prefix.
    pub key: String,
}

/// A photo shipped with the binary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DemoPhoto {
    /// Its file name under `src/demo/photos/`.
    pub name: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

impl std::fmt::Debug for DemoPhoto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Its name says which it is; its bytes would only drown the rest.
        write!(f, "DemoPhoto({}, {} bytes)", self.name, self.bytes.len())
    }
}

/// The photos, from scikit-image's sample data (CC0; see `photos/README.md`).
pub const PHOTOS: [DemoPhoto; 6] = [
    DemoPhoto { name: "espresso.jpg", bytes: include_bytes!("photos/espresso.jpg") },
    DemoPhoto { name: "saucer.png", bytes: include_bytes!("photos/saucer.png") },
    DemoPhoto { name: "shop-cat.jpg", bytes: include_bytes!("photos/shop-cat.jpg") },
    DemoPhoto { name: "cat-eyes.png", bytes: include_bytes!("photos/cat-eyes.png") },
    DemoPhoto { name: "brick-wall.jpg", bytes: include_bytes!("photos/brick-wall.jpg") },
    DemoPhoto { name: "lawn.png", bytes: include_bytes!("photos/lawn.png") },
];

/// A post to write; its photos are stored (and so become `domain::Photo`s)
/// only when the demo loads.
#[derive(Debug, Clone)]
pub struct PlannedPost {
    /// The post's id.
    pub id: PostId,
    /// Its author.
    pub author: MemberId,
    /// The store it is about.
    pub store: StoreId,
    /// Its text.
    pub body: PostBody,
    /// The photos it is created with, in order.
    pub photos: Vec<DemoPhoto>,
    /// Where it is cross-posted.
    pub providers: Vec<Provider>,
    /// The command id's tail.
    pub key: String,
}

/// A photo added to a post after it was written (`uploadPhoto`).
#[derive(Debug, Clone)]
pub struct LaterPhoto {
    /// The post.
    pub post: PostId,
    /// Its index among the post's photos.
    pub index: usize,
    /// The photo.
    pub photo: DemoPhoto,
    /// The command id's tail.
    pub key: String,
}

/// Everything the demo writes, in the phases it is written in: the
/// commands of one phase are independent of each other and run
/// concurrently; a phase starts when the one before it is written.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Members.
    pub members: Vec<Job<MemberCommand>>,
    /// Stores (their owners are members).
    pub stores: Vec<Job<StoreCommand>>,
    /// Purchases under the stores' first policies, the closing store's included.
    pub early_purchases: Vec<Job<WalletCommand>>,
    /// A policy change and a closing.
    pub store_changes: Vec<Job<StoreCommand>>,
    /// Purchases after those changes.
    pub late_purchases: Vec<Job<WalletCommand>>,
    /// Shares, redemptions and adjustments, each within what its wallet earned.
    pub spending: Vec<Job<WalletCommand>>,
    /// Posts.
    pub posts: Vec<PlannedPost>,
    /// Photos added to posts afterwards.
    pub later_photos: Vec<LaterPhoto>,
    /// What the plan amounts to.
    pub summary: Summary,
}

/// What the demo holds: the counts `pointstream demo` announces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Stores registered.
    pub stores: usize,
    /// Of which closed.
    pub closed_stores: usize,
    /// Members registered.
    pub members: usize,
    /// Purchases that earned points.
    pub purchases: usize,
    /// Shares sent.
    pub shares: usize,
    /// Redemptions.
    pub redemptions: usize,
    /// Admin adjustments.
    pub adjustments: usize,
    /// Posts.
    pub posts: usize,
    /// Photos on posts, those added later included.
    pub photos: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stores ({} closed), {} members, {} purchases, {} shares, {} redemptions, {} adjustments, \
             {} posts, {} photos",
            self.stores,
            self.closed_stores,
            self.members,
            self.purchases,
            self.shares,
            self.redemptions,
            self.adjustments,
            self.posts,
            self.photos
        )
    }
}

/// The generator's seed: another seed, another (equally valid) demo.
const SEED: u64 = 0x005E_ED0F_DE40;

/// Purchases in the demo, the three named ones included.
const PURCHASES: usize = 2_000;
/// Of which written before the policy change and the closing.
const EARLY_PURCHASES: usize = 1_200;
/// Shares, `demo-share-1` included.
const SHARES: usize = 100;
/// Redemptions, the named one included.
const REDEMPTIONS: usize = 60;
/// Generated members, besides ann, bob, cat and dan.
const GENERATED_MEMBERS: usize = 96;
/// Members who buy far more often than the others.
const REGULARS: usize = 20;

/// A store of the demo.
struct StoreSpec {
    id: &'static str,
    name: &'static str,
    /// Its owner: one of the named members, or the generated member at this index.
    owner: Owner,
    /// Basis points, cap, minimum purchase.
    policy: (u32, Option<u64>, u64),
    /// What a purchase costs there, in cents: from, to.
    spend: (u64, u64),
    /// Receipt numbers: prefix and the first number.
    receipts: (&'static str, u64),
    /// What points buy there, and for how many.
    rewards: &'static [(&'static str, u64)],
    /// How often members pick it, relative to the others.
    weight: u64,
}

enum Owner {
    Named(&'static str),
    Generated(usize),
}

const STORES: [StoreSpec; 7] = [
    StoreSpec {
        id: "cafe",
        name: "Corner Cafe",
        owner: Owner::Named("ann"),
        policy: (500, Some(100), 1_000),
        spend: (1_000, 3_600),
        receipts: ("r-", 1_003),
        rewards: &[("espresso", 100), ("flat white", 150), ("croissant and coffee", 220), ("bag of house beans", 600)],
        weight: 30,
    },
    StoreSpec {
        id: "bakery",
        name: "Morning Bakery",
        owner: Owner::Named("bob"),
        policy: (1_000, None, 500),
        spend: (500, 3_200),
        receipts: ("b-", 78),
        rewards: &[("croissant", 50), ("cinnamon bun", 80), ("sourdough loaf", 200), ("birthday cake", 900)],
        weight: 20,
    },
    StoreSpec {
        id: "roastery",
        name: "Ember Roastery",
        owner: Owner::Generated(4),
        policy: (800, Some(400), 1_500),
        spend: (1_500, 6_500),
        receipts: ("er-", 5_001),
        rewards: &[("pour-over", 180), ("250 g of single origin", 700)],
        weight: 12,
    },
    StoreSpec {
        id: "tea",
        name: "Leaf & Kettle Tea House",
        owner: Owner::Generated(15),
        policy: (600, None, 800),
        spend: (800, 3_000),
        receipts: ("lk-", 5_001),
        rewards: &[("pot of sencha", 120), ("tasting flight", 400)],
        weight: 10,
    },
    StoreSpec {
        id: "books",
        name: "Paper Lantern Books",
        owner: Owner::Generated(26),
        policy: (300, Some(300), 2_000),
        spend: (2_000, 9_000),
        receipts: ("pl-", 5_001),
        rewards: &[("tote bag", 150), ("paperback of your choice", 500)],
        weight: 8,
    },
    StoreSpec {
        id: "deli",
        name: "Harbour Deli",
        owner: Owner::Generated(37),
        policy: (400, Some(150), 700),
        spend: (700, 2_400),
        receipts: ("hd-", 5_001),
        rewards: &[("soup of the day", 90), ("sandwich", 140)],
        weight: 12,
    },
    StoreSpec {
        id: "juice",
        name: "Sunny Side Juice Bar",
        owner: Owner::Generated(48),
        policy: (700, Some(120), 600),
        spend: (600, 1_500),
        receipts: ("sj-", 5_001),
        rewards: &[("ginger shot", 40), ("smoothie", 110)],
        weight: 8,
    },
];

/// The roastery's second policy: double points on beans, a higher cap.
const ROASTERY_V2: (u32, Option<u64>, u64) = (1_600, Some(600), 1_500);
/// The store that closes after the early purchases.
const CLOSING: &str = "juice";

/// First names: as shown, and as handles and ids spell them.
const FIRST: [(&str, &str); 32] = [
    ("Maya", "maya"),
    ("Leo", "leo"),
    ("Priya", "priya"),
    ("Tomás", "tomas"),
    ("Zoë", "zoe"),
    ("Kenji", "kenji"),
    ("Amara", "amara"),
    ("Felix", "felix"),
    ("Ingrid", "ingrid"),
    ("Omar", "omar"),
    ("Lucía", "lucia"),
    ("Noah", "noah"),
    ("Hana", "hana"),
    ("Mateo", "mateo"),
    ("Freya", "freya"),
    ("Kwame", "kwame"),
    ("Elena", "elena"),
    ("Ravi", "ravi"),
    ("Sofia", "sofia"),
    ("Jonas", "jonas"),
    ("Aisha", "aisha"),
    ("Finn", "finn"),
    ("Mei", "mei"),
    ("Diego", "diego"),
    ("Nora", "nora"),
    ("Arjun", "arjun"),
    ("Clara", "clara"),
    ("Yusuf", "yusuf"),
    ("Inès", "ines"),
    ("Theo", "theo"),
    ("Wen", "wen"),
    ("Björn", "bjorn"),
];

/// Family names: as shown, and as handles and ids spell them.
const LAST: [(&str, &str); 32] = [
    ("Okafor", "okafor"),
    ("Lindqvist", "lindqvist"),
    ("Tanaka", "tanaka"),
    ("Moreau", "moreau"),
    ("Patel", "patel"),
    ("Novak", "novak"),
    ("García", "garcia"),
    ("Schmidt", "schmidt"),
    ("O'Neill", "oneill"),
    ("Rossi", "rossi"),
    ("Nguyen", "nguyen"),
    ("Haddad", "haddad"),
    ("Kowalski", "kowalski"),
    ("Mensah", "mensah"),
    ("Fischer", "fischer"),
    ("Silva", "silva"),
    ("Park", "park"),
    ("Jensen", "jensen"),
    ("Costa", "costa"),
    ("Ivanova", "ivanova"),
    ("Dubois", "dubois"),
    ("Yilmaz", "yilmaz"),
    ("Murphy", "murphy"),
    ("Sato", "sato"),
    ("Bianchi", "bianchi"),
    ("Adeyemi", "adeyemi"),
    ("Larsen", "larsen"),
    ("Chen", "chen"),
    ("Müller", "muller"),
    ("Kaur", "kaur"),
    ("Petrov", "petrov"),
    ("Walsh", "walsh"),
];

const SHARE_MESSAGES: [&str; 12] = [
    "Coffee is on me",
    "Happy birthday!",
    "Thanks for covering lunch",
    "",
    "For the road trip snacks",
    "You earned it",
    "Congrats on the new job!",
    "Split the bill, as promised",
    "",
    "Treat yourself",
    "Thanks for feeding the cat",
    "See you Saturday",
];

/// Admin corrections: store, change, reason.
const ADJUSTMENTS: [(&str, i64, &str); 6] = [
    ("cafe", 50, "Goodwill: the card reader was down"),
    ("bakery", 120, "Points missing from a receipt"),
    ("deli", -40, "Duplicate purchase entered at the till"),
    ("roastery", 200, "Welcome bonus for the roastery's opening week"),
    ("tea", 30, "Apology for a long wait"),
    ("books", -25, "Returned item"),
];

/// A post to write: store, author (or anyone who bought there), body,
/// photos by file name, providers (f: Facebook, t: Twitter).
type PostSpec = (&'static str, Option<&'static str>, &'static str, &'static [&'static str], &'static str);

/// Every post but `demo-post-1`, oldest first.
const POSTS: [PostSpec; 29] = [
    (
        "cafe",
        None,
        "Espresso done right: thick crema, no bitterness. Worth the detour.",
        &["espresso.jpg", "saucer.png"],
        "t",
    ),
    (
        "cafe",
        None,
        "Working from the window seat again. The Wi-Fi is fast and the refills are faster.",
        &["espresso.jpg"],
        "f",
    ),
    (
        "cafe",
        Some("dan"),
        "Met the cafe cat today. She has opinions about my croissant.",
        &["shop-cat.jpg", "cat-eyes.png"],
        "ft",
    ),
    ("cafe", None, "Tip: ask for the oat cortado, it's not on the board.", &["saucer.png"], ""),
    ("cafe", None, "Saturday morning queue out the door, but it moved quickly.", &[], "t"),
    ("bakery", Some("cat"), "The sourdough sold out by 9. Set an alarm.", &["brick-wall.jpg"], "f"),
    ("bakery", Some("ann"), "Cinnamon buns still warm at 7:30. Dangerous.", &[], "ft"),
    ("bakery", None, "Love the new brick floor: the place feels twice as big.", &["brick-wall.jpg"], ""),
    ("bakery", None, "Ordered a birthday cake with two days' notice and it was perfect.", &[], "f"),
    ("bakery", None, "The bakery cat supervises the bread rack. Nobody argues.", &["shop-cat.jpg"], "t"),
    (
        "roastery",
        None,
        "Cupping session tonight: three Ethiopian lots side by side.",
        &["espresso.jpg", "saucer.png"],
        "ft",
    ),
    ("roastery", None, "Double points on beans this month. Stocked up for the winter.", &["saucer.png"], "t"),
    ("roastery", None, "Their house blend makes my home espresso taste like a cafe's.", &["espresso.jpg"], "f"),
    ("roastery", None, "Watched them roast a batch: first crack sounds like popcorn.", &[], ""),
    ("tea", None, "Sencha on the terrace. Quiet, green, exactly what I needed.", &["lawn.png", "saucer.png"], "f"),
    ("tea", None, "The tasting flight is a great way to find a new favourite.", &["saucer.png"], "t"),
    ("tea", None, "Rainy afternoon, pot of oolong, good book.", &[], "ft"),
    ("tea", None, "Their garden seating is open again!", &["lawn.png"], "f"),
    ("books", None, "Found a first edition in the back room. Points paid for the tote bag too.", &[], "f"),
    (
        "books",
        None,
        "Poetry reading on Thursday was packed, standing room only against the brick wall.",
        &["brick-wall.jpg"],
        "t",
    ),
    ("books", None, "The staff picks shelf never misses.", &[], ""),
    (
        "books",
        None,
        "The shop cat sleeps on the travel section. Don't move her.",
        &["cat-eyes.png", "shop-cat.jpg"],
        "ft",
    ),
    ("deli", None, "Soup of the day was a proper minestrone.", &[], "t"),
    ("deli", None, "Best pastrami sandwich this side of the harbour.", &[], "f"),
    ("deli", None, "Friendly staff, fast lunch, fair prices.", &[], ""),
    ("deli", None, "Picked up olives and cheese for a picnic on the green.", &["lawn.png"], "ft"),
    ("juice", None, "Sad to see Sunny Side close. The green smoothie was the best in town.", &["lawn.png"], "f"),
    ("juice", None, "Last day at the juice bar: free ginger shots for everyone.", &[], "t"),
    ("juice", None, "Carrot, orange and ginger: my morning ritual for two years.", &["lawn.png", "cat-eyes.png"], ""),
];

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same demo on every machine and every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index into a slice of `len` (> 0) items.
    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A member of the demo.
struct Person {
    id: String,
    handle: String,
    name: String,
    /// The stores they go to most, then second most.
    favourites: (usize, usize),
}

/// The named members: ann, bob, cat and dan, as they always were.
const NAMED: [(&str, &str); 4] = [("ann", "Ann"), ("bob", "Bob"), ("cat", "Cat"), ("dan", "Dan")];

fn people(rng: &mut Rng) -> Vec<Person> {
    let mut people: Vec<Person> = NAMED
        .iter()
        .enumerate()
        .map(|(i, (id, name))| Person {
            id: (*id).to_string(),
            handle: format!("{id}_demo"),
            name: (*name).to_string(),
            // ann and bob at the cafe and the bakery, cat at the bakery, dan at the cafe.
            favourites: [(0, 1), (0, 1), (1, 0), (0, 5)][i],
        })
        .collect();
    for i in 0..GENERATED_MEMBERS {
        // Every (first, last) pair differs: two indices with the same first
        // name are 32 or 64 apart, which moves the family name by 1 or 2.
        let (first, first_ascii) = FIRST[i % FIRST.len()];
        let (last, last_ascii) = LAST[(7 * i + i / FIRST.len()) % LAST.len()];
        let initial = &last_ascii[..1];
        let handle = match i % 5 {
            0 => format!("{first_ascii}_{last_ascii}"),
            1 => format!("{first_ascii}{last_ascii}"),
            2 => format!("{first_ascii}_{initial}{i:02}"),
            3 => format!("{last_ascii}_{first_ascii}"),
            _ => format!("{first_ascii}{last_ascii}_{}", 80 + i % 20),
        };
        let name = if i % 6 == 5 {
            format!("{first} {}.", last.chars().next().unwrap_or('X'))
        } else {
            format!("{first} {last}")
        };
        let favourite = weighted_store(rng);
        let mut second = weighted_store(rng);
        if second == favourite {
            second = (favourite + 1) % STORES.len();
        }
        people.push(Person {
            id: format!("{first_ascii}-{last_ascii}"),
            handle,
            name,
            favourites: (favourite, second),
        });
    }
    people
}

/// A store index, by the stores' weights.
fn weighted_store(rng: &mut Rng) -> usize {
    let total: u64 = STORES.iter().map(|s| s.weight).sum();
    let mut at = rng.below(total);
    for (index, store) in STORES.iter().enumerate() {
        if at < store.weight {
            return index;
        }
        at -= store.weight;
    }
    0
}

fn policy((rate, cap, min): (u32, Option<u64>, u64)) -> anyhow::Result<EarnPolicy> {
    Ok(EarnPolicy::new(rate, cap.map(Points::new).transpose()?, min)?)
}

fn owner_of(spec: &StoreSpec) -> String {
    match spec.owner {
        Owner::Named(id) => id.to_string(),
        // Generated members come after the four named ones.
        Owner::Generated(index) => {
            let (_, first) = FIRST[index % FIRST.len()];
            let (_, last) = LAST[(7 * index + index / FIRST.len()) % LAST.len()];
            format!("{first}-{last}")
        }
    }
}

/// The points each (member, store) wallet has to spend, as far as the plan
/// knows: earned and adjusted up, less what was spent.
#[derive(Default)]
struct Books(BTreeMap<(String, String), u64>);

impl Books {
    fn credit(&mut self, member: &str, store: &str, points: u64) {
        *self.0.entry((member.to_string(), store.to_string())).or_default() += points;
    }

    fn debit(&mut self, member: &str, store: &str, points: u64) -> anyhow::Result<()> {
        let balance = self.0.entry((member.to_string(), store.to_string())).or_default();
        *balance = balance
            .checked_sub(points)
            .ok_or_else(|| anyhow::anyhow!("the demo plan overspends {member} at {store}"))?;
        Ok(())
    }

    fn balance(&self, member: &str, store: &str) -> u64 {
        self.0.get(&(member.to_string(), store.to_string())).copied().unwrap_or(0)
    }

    /// Wallets holding at least `points`, bob's at the cafe excepted: the
    /// docs promise him a few hundred points there.
    fn holding(&self, points: u64) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|((member, store), balance)| **balance >= points && !(member == "bob" && store == "cafe"))
            .map(|(wallet, _)| wallet.clone())
            .collect()
    }
}

fn earn(member: &str, store: &str, receipt: &str, cents: u64) -> anyhow::Result<Job<WalletCommand>> {
    Ok(Job {
        id: member.to_string(),
        command: WalletCommand::Earn {
            member: MemberId::parse(member)?,
            store: StoreId::parse(store)?,
            purchase_ref: PurchaseRef::parse(receipt)?,
            amount: Amount::new(cents)?,
        },
        key: format!("earn/{store}/{receipt}"),
    })
}

fn share(
    sender: &str,
    id: &str,
    key: &str,
    store: &str,
    parts: &[(&str, u64)],
    message: &str,
) -> anyhow::Result<Job<WalletCommand>> {
    let recipients = parts
        .iter()
        .map(|(member, points)| Ok(SharePart { member: MemberId::parse(*member)?, points: Points::new(*points)? }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Job {
        id: sender.to_string(),
        command: WalletCommand::Share {
            share: ShareId::parse(id)?,
            store: StoreId::parse(store)?,
            recipients,
            message: ShareMessage::parse(message)?,
        },
        key: key.to_string(),
    })
}

fn redeem(member: &str, key: &str, store: &str, points: u64, reward: &str) -> anyhow::Result<Job<WalletCommand>> {
    Ok(Job {
        id: member.to_string(),
        command: WalletCommand::Redeem {
            store: StoreId::parse(store)?,
            points: Points::new(points)?,
            reward: Reason::parse(reward)?,
        },
        key: key.to_string(),
    })
}

/// The demo's commands. Deterministic: every call returns the same plan.
pub fn plan() -> anyhow::Result<Plan> {
    let mut rng = Rng(SEED);
    let people = people(&mut rng);
    let mut summary = Summary::default();

    let members = people
        .iter()
        .map(|p| {
            Ok(Job {
                id: p.id.clone(),
                command: MemberCommand::Register {
                    member: MemberId::parse(p.id.as_str())?,
                    handle: Handle::parse(p.handle.as_str())?,
                    display_name: DisplayName::parse(p.name.as_str())?,
                },
                key: format!("member/{}", p.id),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    summary.members = members.len();

    let stores = STORES
        .iter()
        .map(|spec| {
            Ok(Job {
                id: spec.id.to_string(),
                command: StoreCommand::Register {
                    store: StoreId::parse(spec.id)?,
                    name: StoreName::parse(spec.name)?,
                    owner: MemberId::parse(owner_of(spec))?,
                    policy: policy(spec.policy)?,
                },
                key: format!("store/{}", spec.id),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    summary.stores = stores.len();
    summary.closed_stores = 1;

    // The purchases: first the three the demo always had, then a mix in
    // which regulars buy several times as often as the others and everyone
    // mostly goes to their favourite stores.
    let mut books = Books::default();
    let mut receipts: Vec<u64> = STORES.iter().map(|s| s.receipts.1).collect();
    let mut early = Vec::new();
    let mut late = Vec::new();
    let mut bought_at: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); STORES.len()];
    let named_purchases = [("bob", 0, "r-1001", 4_500), ("bob", 0, "r-1002", 2_000), ("cat", 1, "b-77", 1_200)];
    for (member, store, receipt, cents) in named_purchases {
        let points = policy(STORES[store].policy)?.points_for(Amount::new(cents)?).map_or(0, Points::get);
        books.credit(member, STORES[store].id, points);
        bought_at[store].insert(people.iter().position(|p| p.id == member).unwrap_or(0));
        early.push(earn(member, STORES[store].id, receipt, cents)?);
    }
    let closing = STORES.iter().position(|s| s.id == CLOSING).unwrap_or(STORES.len() - 1);
    for n in named_purchases.len()..PURCHASES {
        let is_early = n < EARLY_PURCHASES;
        let person = if n % 60 == 0 {
            1 // bob, who is at the cafe every other day
        } else if rng.chance(50) {
            // Regulars among the generated members (who come after the
            // four named ones), spread over the list.
            NAMED.len() + 1 + rng.index(REGULARS) * 4
        } else {
            rng.index(people.len())
        };
        let mut store = match (n % 60 == 0, rng.below(100)) {
            (true, _) => 0,
            (false, 0..60) => people[person].favourites.0,
            (false, 60..85) => people[person].favourites.1,
            _ => weighted_store(&mut rng),
        };
        if store == closing && !is_early {
            // Closed by then: they went to the cafe instead.
            store = 0;
        }
        let spec = &STORES[store];
        // Mostly small purchases, now and then a big one.
        let spread = rng.below(1_000);
        let cents = spec.spend.0 + (spec.spend.1 - spec.spend.0) * spread * spread / 1_000_000;
        let cents = cents - cents % 5;
        let terms = if store == 2 && !is_early { ROASTERY_V2 } else { spec.policy };
        let points = policy(terms)?.points_for(Amount::new(cents)?).map_or(0, Points::get);
        books.credit(&people[person].id, spec.id, points);
        bought_at[store].insert(person);
        let receipt = format!("{}{}", spec.receipts.0, receipts[store]);
        receipts[store] += 1;
        let job = earn(&people[person].id, spec.id, &receipt, cents)?;
        if is_early { early.push(job) } else { late.push(job) }
    }
    summary.purchases = early.len() + late.len();

    let store_changes = vec![
        Job {
            id: "roastery".to_string(),
            command: StoreCommand::UpdateEarnPolicy { policy: policy(ROASTERY_V2)? },
            key: "store/roastery/policy-2".to_string(),
        },
        Job { id: CLOSING.to_string(), command: StoreCommand::Close, key: format!("store/{CLOSING}/close") },
    ];

    // Spending, each within the books. The named share and redemption first.
    let mut spending = Vec::new();
    books.debit("bob", "cafe", 150)?;
    spending.push(share("bob", "demo-share-1", "share/1", "cafe", &[("cat", 100), ("dan", 50)], "Coffee is on me")?);
    books.debit("cat", "bakery", 50)?;
    spending.push(redeem("cat", "redeem/1", "bakery", 50, "croissant")?);
    summary.shares = 1;
    summary.redemptions = 1;

    for (index, (store, change, reason)) in ADJUSTMENTS.iter().enumerate() {
        let candidates = books.holding(change.unsigned_abs().max(200));
        let candidates: Vec<_> = candidates.iter().filter(|(_, at)| at.as_str() == *store).collect();
        let Some((member, _)) = candidates.get(rng.index(candidates.len().max(1))).copied() else {
            anyhow::bail!("the demo plan has nobody to adjust at {store}");
        };
        if *change > 0 {
            books.credit(member, store, change.unsigned_abs());
        } else {
            books.debit(member, store, change.unsigned_abs())?;
        }
        spending.push(Job {
            id: member.clone(),
            command: WalletCommand::Adjust {
                member: MemberId::parse(member.as_str())?,
                store: StoreId::parse(*store)?,
                adjustment: Adjustment::new(*change)?,
                reason: Reason::parse(*reason)?,
            },
            key: format!("adjust/{}", index + 1),
        });
        summary.adjustments += 1;
    }

    let dan = "dan";
    while summary.shares < SHARES {
        let wallets = books.holding(120);
        anyhow::ensure!(!wallets.is_empty(), "the demo plan has no wallet left to share from");
        let (sender, store) = wallets[rng.index(wallets.len())].clone();
        let count = match rng.below(100) {
            0..55 => 1,
            55..80 => 2,
            80..92 => 3,
            _ => 4 + rng.index(3),
        };
        let budget = books.balance(&sender, &store) / 2;
        let mut recipients: Vec<&str> = Vec::new();
        // Every tenth share remembers dan.
        if summary.shares % 10 == 3 && sender != dan {
            recipients.push(dan);
        }
        while recipients.len() < count {
            let candidate = people[rng.index(people.len())].id.as_str();
            if candidate != sender && !recipients.contains(&candidate) {
                recipients.push(candidate);
            }
        }
        let each = (budget / recipients.len() as u64).min(10 * (1 + rng.below(10)));
        let each = each - each % 5;
        if each == 0 {
            continue;
        }
        let parts: Vec<(&str, u64)> = recipients.iter().map(|r| (*r, each)).collect();
        books.debit(&sender, &store, each * parts.len() as u64)?;
        summary.shares += 1;
        let id = format!("demo-share-{}", summary.shares);
        let message = SHARE_MESSAGES[rng.index(SHARE_MESSAGES.len())];
        spending.push(share(&sender, &id, &format!("share/{}", summary.shares), &store, &parts, message)?);
    }

    // Tries are bounded: a wallet picked may afford no reward.
    for _ in 0..100 * REDEMPTIONS {
        if summary.redemptions == REDEMPTIONS {
            break;
        }
        let wallets = books.holding(1);
        anyhow::ensure!(!wallets.is_empty(), "the demo plan has no wallet left to redeem from");
        let (member, store) = wallets[rng.index(wallets.len())].clone();
        let Some(spec) = STORES.iter().find(|s| s.id == store) else { continue };
        let balance = books.balance(&member, &store);
        let affordable: Vec<_> = spec.rewards.iter().filter(|(_, price)| *price <= balance).collect();
        if affordable.is_empty() {
            continue;
        }
        let (reward, price) = *affordable[rng.index(affordable.len())];
        books.debit(&member, &store, price)?;
        summary.redemptions += 1;
        spending.push(redeem(&member, &format!("redeem/{}", summary.redemptions), &store, price, reward)?);
    }

    // Posts: demo-post-1 as it always was (its photo comes later, as an
    // upload to a post that exists), then the others by people who bought
    // at the store they write about.
    let mut posts = vec![PlannedPost {
        id: PostId::parse("demo-post-1")?,
        author: MemberId::parse("bob")?,
        store: StoreId::parse("cafe")?,
        body: PostBody::parse("Best flat white in town")?,
        photos: Vec::new(),
        providers: vec![Provider::Facebook, Provider::Twitter],
        key: "post/1".to_string(),
    }];
    let later_photos = vec![LaterPhoto {
        post: PostId::parse("demo-post-1")?,
        index: 0,
        photo: photo("espresso.jpg")?,
        key: "post/1/photo/0".to_string(),
    }];
    for (n, (store, author, body, photos, providers)) in POSTS.iter().enumerate() {
        let number = n + 2;
        let at = STORES.iter().position(|s| s.id == *store).unwrap_or(0);
        let author = match author {
            Some(author) => (*author).to_string(),
            None => {
                let buyers: Vec<usize> = bought_at[at].iter().copied().collect();
                anyhow::ensure!(!buyers.is_empty(), "nobody bought at {store} in the demo plan");
                people[buyers[rng.index(buyers.len())]].id.clone()
            }
        };
        let providers =
            providers.chars().map(|c| if c == 'f' { Provider::Facebook } else { Provider::Twitter }).collect();
        posts.push(PlannedPost {
            id: PostId::parse(format!("demo-post-{number}"))?,
            author: MemberId::parse(author)?,
            store: StoreId::parse(*store)?,
            body: PostBody::parse(*body)?,
            photos: photos.iter().map(|name| photo(name)).collect::<anyhow::Result<_>>()?,
            providers,
            key: format!("post/{number}"),
        });
    }
    summary.posts = posts.len();
    summary.photos = posts.iter().map(|p| p.photos.len()).sum::<usize>() + later_photos.len();

    Ok(Plan {
        members,
        stores,
        early_purchases: early,
        store_changes,
        late_purchases: late,
        spending,
        posts,
        later_photos,
        summary,
    })
}

fn photo(name: &str) -> anyhow::Result<DemoPhoto> {
    PHOTOS.iter().find(|p| p.name == name).copied().ok_or_else(|| anyhow::anyhow!("no demo photo {name}"))
}
