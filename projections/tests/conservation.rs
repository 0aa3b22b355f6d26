//! Conservation of points under concurrency, with the projectors and the share
//! distribution running while commands land (MariaDB).

extern crate pointstream_projections as projections;

#[path = "../../eventstore/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use domain::values::{Reason, ShareId, ShareMessage};
use domain::{DomainError, Member, MemberCommand, SharePart, Wallet, WalletCommand, WalletEvent};
use eventstore::{CommandContext, CommandError, EventStore};
use projections::entities::{balances, share_recipients, shares};
use projections::{ProjectorConfig, audit, catch_up, spawn_all};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use support::{Backend, cafe, earn, member, open, points, quiet, scratch, world};
use tokio::sync::watch;

const MEMBERS: usize = 50;
const TASKS: usize = 8;
const COMMANDS_PER_TASK: usize = 260;

fn name(i: usize) -> String {
    format!("m{i:02}")
}

/// One task's random commands; returns how many were accepted.
async fn random_commands(store: EventStore, task: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(task as u64);
    let mut accepted = 0;
    for i in 0..COMMANDS_PER_TASK {
        let who = name(rng.random_range(0..MEMBERS));
        if task == 0 && i == COMMANDS_PER_TASK / 3 {
            // Some members leave while shares to them are in flight.
            for gone in MEMBERS - 5..MEMBERS {
                let id = name(gone);
                store
                    .execute::<Member>(&id, MemberCommand::Deactivate, CommandContext::default())
                    .await
                    .expect("deactivates");
            }
        }
        let command = match rng.random_range(0..10) {
            0..5 => earn(&who, &format!("t{task}-{i}"), rng.random_range(100..5_000)),
            5..8 => {
                let mut recipients: Vec<SharePart> = Vec::new();
                for _ in 0..rng.random_range(1..=3) {
                    let to = name(rng.random_range(0..MEMBERS));
                    if to != who && !recipients.iter().any(|p| p.member.as_str() == to) {
                        recipients.push(SharePart { member: member(&to), points: points(rng.random_range(1..40)) });
                    }
                }
                if recipients.is_empty() {
                    continue;
                }
                WalletCommand::Share {
                    share: ShareId::parse(format!("s{task}-{i}")).expect("valid"),
                    store: cafe(),
                    recipients,
                    message: ShareMessage::parse("for you").expect("valid"),
                }
            }
            _ => WalletCommand::Redeem {
                store: cafe(),
                points: points(rng.random_range(1..60)),
                reward: Reason::parse("coffee").expect("valid"),
            },
        };
        match store.execute::<Wallet>(&who, command, CommandContext::default()).await {
            Ok(_) => accepted += 1,
            Err(CommandError::Rejected(
                DomainError::InsufficientPoints { .. } | DomainError::MemberInactive(_) | DomainError::NotFound(_),
            )) => {}
            Err(CommandError::Conflict { .. }) => {}
            Err(other) => panic!("task {task}: {other}"),
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn points_are_conserved_under_concurrent_commands_and_distribution() {
    conserved(false).await
}

/// The same with every projection written inline by two processes (two
/// stores on one database), the commands spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn points_are_conserved_with_projections_written_inline_by_two_processes() {
    conserved(true).await
}

async fn conserved(inline: bool) {
    let Some(db) = scratch(Backend::Mysql).await else { return };
    let store = open(&db, quiet()).await;
    // The second process, writing inline too, in the inline variant only.
    let other = if inline { Some(open(&db, quiet()).await) } else { None };
    if let Some(other) = &other {
        for process in [&store, other] {
            projections::write_inline(process, &projections::PROJECTIONS).expect("known projections");
        }
    }
    let people: Vec<String> = (0..MEMBERS).map(name).collect();
    world(&store, &people.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let seeded = store.head();

    let (stop, shutdown) = watch::channel(false);
    let config = ProjectorConfig {
        batch_size: 200,
        lease_ttl: Duration::from_secs(2),
        idle_wait: Duration::from_millis(50),
        ..ProjectorConfig::default()
    };
    let running = spawn_all(&store, &config, &shutdown);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let process = other.as_ref().filter(|_| task % 2 == 1).unwrap_or(&store);
            tokio::spawn(random_commands(process.clone(), task))
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.expect("a command task finishes");
    }
    for process in other.iter().chain(inline.then_some(&store)) {
        let applied = *process.inline_applied("wallets").expect("wallets is written inline").borrow();
        assert!(applied > seeded, "the process's appends wrote the wallets inline: {applied} after {seeded}");
    }
    stop.send_replace(true);
    for task in running.tasks {
        task.await.expect("a projector stops").expect("a projector ran cleanly");
    }
    catch_up(&store, 500).await.expect("projections catch up");
    assert!(accepted > 1_000, "only {accepted} commands were accepted");

    // What the log says moved.
    let mut flow: i128 = 0;
    let mut after = 0;
    loop {
        let page = store.read_from(after, 1_000).await.expect("the log reads");
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page.iter().filter(|e| e.aggregate_type == "Wallet") {
            match event.decode::<Wallet>().expect("decodes") {
                WalletEvent::PointsEarned { points, .. } => flow += i128::from(points.get()),
                WalletEvent::PointsRedeemed { points, .. } | WalletEvent::PointsExpired { points, .. } => {
                    flow -= i128::from(points.get())
                }
                WalletEvent::PointsAdjusted { adjustment, .. } => flow += i128::from(adjustment.get()),
                _ => {}
            }
        }
    }
    let rows = balances::Entity::find().all(store.db()).await.expect("reads");
    assert!(rows.iter().all(|b| b.balance >= 0), "a negative balance");
    let total: i128 = rows.iter().map(|b| i128::from(b.balance)).sum();
    assert_eq!(total, flow, "sum of balances == earned - redeemed - expired +/- adjusted");
    let mut aggregates: i128 = 0;
    for who in &people {
        aggregates += i128::from(store.load::<Wallet>(who).await.expect("loads").state.balance(&cafe()));
    }
    assert_eq!(aggregates, total, "read model and aggregates agree");

    let unsettled = shares::Entity::find().filter(shares::Column::Status.ne("settled")).count(store.db()).await;
    assert_eq!(unsettled.expect("counts"), 0, "every share settled");
    let pending =
        share_recipients::Entity::find().filter(share_recipients::Column::Status.eq("pending")).count(store.db());
    assert_eq!(pending.await.expect("counts"), 0);
    let refunded =
        share_recipients::Entity::find().filter(share_recipients::Column::Status.eq("refunded")).count(store.db());
    assert!(refunded.await.expect("counts") > 0, "shares to deactivated members were refunded");
    let report = audit(&store).await.expect("audits");
    assert!(report.is_clean(), "{:?}", report.problems());
}
