//! Checks for users' test suites: every down section restores the schema its
//! up section found, the whole graph goes up, down to base and up again to
//! the same schema, and the set has one head.
//!
//! Each `check_*` returns a [`ReversibilityError`] naming the revision and the
//! schema difference; each `assert_*` panics with that message. The schema is
//! compared with [`Snapshot`]s, leaving out the migrator's bookkeeping schema.

use std::future::Future;
use std::panic::Location;

use tokio_postgres::Client;

use crate::error::Error;
use crate::id::RevisionId;
use crate::migrator::Migrator;
use crate::plan::{Direction, Target};
use crate::session::Db;
use crate::source::MigrationSet;

use super::error::{ReversibilityError, error_chain};
use super::snapshot::Snapshot;
use super::template::for_tests;

/// Checks every pending revision, one at a time in plan order: up, snapshot,
/// down, compare with the snapshot taken before the up, up again, compare
/// with the first up. Leaves the database at head.
///
/// Start from an empty database (for instance
/// [`TestServer::create_database`](super::TestServer::create_database)): each
/// revision is applied with `+1` and reverted with `-1`, which is exact when
/// nothing later in plan order is already applied. Revisions without a down
/// section fail the check. Backfills run inline, so a revision that depends
/// on one can be applied. Repeatable revisions are applied with the last
/// versioned revision and removed with any downgrade, so they count as part
/// of that revision.
///
/// ```no_run
/// use pgskein::MigrationSet;
/// use pgskein::testing::{TestServer, check_reversible};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let set = MigrationSet::from_dir("migrations")?;
/// let db = TestServer::shared()?.create_database("reversible").await?;
/// let client = db.connect().await?;
/// if let Err(e) = check_reversible(&set, &client).await {
///     panic!("{e}");
/// }
/// # Ok(()) }
/// ```
pub async fn check_reversible<'a, M: Migrator>(
    migrator: &M,
    db: impl Into<Db<'a>> + Send + 'a,
) -> Result<(), ReversibilityError> {
    let migrator = &for_tests(migrator);
    let held = Held::from(db.into()).await?;
    let client = held.client();
    let schema = migrator.config().schema_name().to_owned();
    let plan = migrator
        .plan(client, &Target::Heads)
        .await
        .map_err(|source| ReversibilityError::Run { operation: "planning", source })?;
    let set = migrator
        .migrations()
        .map_err(|source| ReversibilityError::Run { operation: "loading the migrations", source })?;
    let irreversible = plan
        .steps
        .iter()
        .filter_map(|s| set.get(s.id.as_str()))
        .find(|r| r.down().is_none() && !r.is_repeatable());
    if let Some(rev) = irreversible {
        return Err(ReversibilityError::Irreversible {
            revision: rev.id().clone(),
            path: rev.origin().to_owned(),
        });
    }
    let mut before = snapshot(client, &schema).await?;
    // Repeatable revisions are no steps of their own: they come with the
    // upgrade that completes the versioned ones and go with any downgrade.
    let versioned = plan.steps.iter().filter(|s| set.get(s.id.as_str()).is_none_or(|r| !r.is_repeatable()));
    for step in versioned {
        let id = &step.id;
        one_step(migrator, client, id, Direction::Up).await?;
        let applied = snapshot(client, &schema).await?;
        one_step(migrator, client, id, Direction::Down).await?;
        let reverted = snapshot(client, &schema).await?;
        let diff = before.diff(&reverted);
        if !diff.is_empty() {
            return Err(ReversibilityError::NotRestored { revision: id.clone(), diff });
        }
        one_step(migrator, client, id, Direction::Up).await?;
        let again = snapshot(client, &schema).await?;
        let diff = applied.diff(&again);
        if !diff.is_empty() {
            return Err(ReversibilityError::NotRepeatable { revision: id.clone(), diff });
        }
        before = again;
    }
    Ok(())
}

/// [`check_reversible`], panicking with its error.
///
/// ```no_run
/// # async fn example(set: pgskein::MigrationSet) {
/// use pgskein::testing::{TestServer, assert_reversible};
/// let db = TestServer::shared().unwrap().create_database("reversible").await.unwrap();
/// assert_reversible(&set, &db.connect().await.unwrap()).await;
/// # }
/// ```
///
/// The message starts with the caller's file and line: a panic in a future
/// is reported where it is polled, inside pgskein, so the call site is named
/// in the message.
#[track_caller]
pub fn assert_reversible<'a, M: Migrator>(
    migrator: &M,
    db: impl Into<Db<'a>> + Send + 'a,
) -> impl Future<Output = ()> {
    let at = Location::caller();
    async move {
        if let Err(e) = check_reversible(migrator, db).await {
            panic!("assert_reversible failed at {at}: {}", error_chain(&e));
        }
    }
}

/// Upgrades to head, downgrades to base and upgrades again, checking that the
/// downgrade restores the schema the upgrade started from and that the second
/// upgrade gives the schema of the first. Start from an empty database.
pub async fn check_up_down_up<'a, M: Migrator>(
    migrator: &M,
    db: impl Into<Db<'a>> + Send + 'a,
) -> Result<(), ReversibilityError> {
    let migrator = &for_tests(migrator);
    let held = Held::from(db.into()).await?;
    let client = held.client();
    let schema = migrator.config().schema_name().to_owned();
    let start = snapshot(client, &schema).await?;
    migrator
        .run(client)
        .await
        .map_err(|source| ReversibilityError::Run { operation: "upgrade to head", source })?;
    let head = snapshot(client, &schema).await?;
    migrator
        .downgrade(client, &Target::Base)
        .await
        .map_err(|source| ReversibilityError::Run { operation: "downgrade to base", source })?;
    let diff = start.diff(&snapshot(client, &schema).await?);
    if !diff.is_empty() {
        return Err(ReversibilityError::BaseNotRestored { diff });
    }
    migrator
        .run(client)
        .await
        .map_err(|source| ReversibilityError::Run { operation: "second upgrade to head", source })?;
    let diff = head.diff(&snapshot(client, &schema).await?);
    if !diff.is_empty() {
        return Err(ReversibilityError::HeadNotRepeatable { diff });
    }
    Ok(())
}

/// [`check_up_down_up`], panicking with its error; the message starts with
/// the caller's file and line, as [`assert_reversible`]'s does.
#[track_caller]
pub fn assert_up_down_up<'a, M: Migrator>(
    migrator: &M,
    db: impl Into<Db<'a>> + Send + 'a,
) -> impl Future<Output = ()> {
    let at = Location::caller();
    async move {
        if let Err(e) = check_up_down_up(migrator, db).await {
            panic!("assert_up_down_up failed at {at}: {}", error_chain(&e));
        }
    }
}

/// `Err(Error::MultipleHeads)` when the set has more than one head, as a set
/// built with [`allow_multiple_heads`](crate::SetBuilder::allow_multiple_heads)
/// may: two branches that nobody merged yet.
///
/// ```
/// use pgskein::MigrationSet;
/// let set = MigrationSet::builder()
///     .file("0001_a.sql", b"-- pgskein: up\nSELECT 1;\n")
///     .file("0002_b.sql", b"-- pgskein: up\nSELECT 1;\n")
///     .allow_multiple_heads(true)
///     .build()?;
/// let err = pgskein::testing::check_single_head(&set).unwrap_err();
/// assert!(err.to_string().contains("2 heads"), "{err}");
/// # Ok::<(), pgskein::Error>(())
/// ```
pub fn check_single_head(set: &MigrationSet) -> Result<(), Error> {
    let heads = set.heads();
    if heads.len() > 1 {
        return Err(Error::MultipleHeads { heads: heads.into_iter().cloned().collect() });
    }
    Ok(())
}

/// [`check_single_head`], panicking with its error.
///
/// ```
/// # use include_dir::{include_dir, Dir};
/// # static MIGRATIONS: Dir = include_dir!("$CARGO_MANIFEST_DIR/migrations");
/// let set = pgskein::MigrationSet::builder().embedded(&MIGRATIONS).allow_multiple_heads(true).build()?;
/// pgskein::testing::assert_single_head(&set);
/// # Ok::<(), pgskein::Error>(())
/// ```
#[track_caller]
pub fn assert_single_head(set: &MigrationSet) {
    if let Err(e) = check_single_head(set) {
        panic!("{e}");
    }
}

/// Applies or reverts exactly revision `id`, and the repeatable revisions
/// that come or go with it.
async fn one_step<M: Migrator>(
    migrator: &M,
    client: &Client,
    id: &RevisionId,
    direction: Direction,
) -> Result<(), ReversibilityError> {
    let report = match direction {
        Direction::Up => migrator.upgrade(client, &Target::Relative(1)).await,
        Direction::Down => migrator.downgrade(client, &Target::Relative(-1)).await,
    }
    .map_err(|source| ReversibilityError::Step { revision: id.clone(), direction, source })?;
    let ran: Vec<RevisionId> = report.steps.iter().map(|s| s.id.clone()).collect();
    let set = migrator
        .migrations()
        .map_err(|source| ReversibilityError::Run { operation: "loading the migrations", source })?;
    let others =
        ran.iter().filter(|r| *r != id).all(|r| set.get(r.as_str()).is_some_and(|r| r.is_repeatable()));
    if ran.iter().filter(|r| *r == id).count() != 1 || !others {
        return Err(ReversibilityError::UnexpectedSteps { expected: id.clone(), direction, actual: ran });
    }
    Ok(())
}

async fn snapshot(client: &Client, schema: &str) -> Result<Snapshot, ReversibilityError> {
    Snapshot::take_excluding(client, &[schema])
        .await
        .map_err(|source| ReversibilityError::Snapshot { source })
}

/// The one connection a check works on: the caller's client, or one taken
/// from the caller's pool for the whole check.
enum Held<'a> {
    Client(&'a Client),
    Pooled(Box<deadpool_postgres::Object>),
}

impl<'a> Held<'a> {
    async fn from(db: Db<'a>) -> Result<Held<'a>, ReversibilityError> {
        Ok(match db {
            Db::Client(c) => Held::Client(c),
            Db::Pool(p) => {
                Held::Pooled(Box::new(p.get().await.map_err(|source| ReversibilityError::Pool { source })?))
            }
        })
    }

    fn client(&self) -> &Client {
        match self {
            Held::Client(c) => c,
            Held::Pooled(o) => o,
        }
    }
}
