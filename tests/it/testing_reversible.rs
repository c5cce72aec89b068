//! The reversibility checks users put in their suites: they name the
//! revision and the difference on fixtures whose down section forgets
//! something. That they pass on the example schema is shown by
//! `testing_example`, the file users copy.

use pgskein::Migrator;
use pgskein::report::Direction;
use pgskein::testing::{
    ReversibilityError, assert_reversible, assert_single_head, assert_up_down_up, check_reversible,
    check_single_head, check_up_down_up,
};

use crate::common::{chain, example, fixture, fresh_db, ledger, temp_set};

#[tokio::test]
async fn example_schema_survives_up_down_up_through_a_pool() {
    let db = fresh_db("rev_cycle").await;
    let pool = db.pool(2);
    assert_up_down_up(&example(), &pool).await;
}

/// `check_reversible` on a fixture: the error's message.
async fn reversibility_failure(name: &str) -> (ReversibilityError, String) {
    let db = fresh_db(name).await;
    let client = db.connect().await.unwrap();
    let err = check_reversible(&fixture(name), &client).await.unwrap_err();
    let message = err.to_string();
    (err, message)
}

#[tokio::test]
async fn a_down_that_misses_an_index_fails_naming_the_revision_and_the_index() {
    let (err, message) = reversibility_failure("down_misses_index").await;
    assert!(
        matches!(&err, ReversibilityError::NotRestored { revision, .. } if revision.as_str() == "0002_item_indexes")
    );
    assert_eq!(
        message,
        "revision 0002_item_indexes: its down section does not restore the schema its up section found \
         (- before the up, + after the down):\n\
         table public.items (changed)\n\
         \x20 + index items_price_idx: CREATE INDEX items_price_idx ON public.items USING btree (price)\n"
    );
}

#[tokio::test]
async fn a_down_that_misses_a_column_default_fails_naming_the_column() {
    let (_, message) = reversibility_failure("down_misses_default").await;
    assert_eq!(
        message,
        "revision 0002_item_currency: its down section does not restore the schema its up section found \
         (- before the up, + after the down):\n\
         table public.items (changed)\n\
         \x20 ~ column price\n\
         \x20     - numeric(10,2) not null\n\
         \x20     + numeric(10,2) not null default 0\n"
    );
}

#[tokio::test]
async fn a_down_that_misses_an_enum_label_fails_naming_the_labels() {
    let (_, message) = reversibility_failure("down_misses_enum_label").await;
    assert_eq!(
        message,
        "revision 0002_item_archiving: its down section does not restore the schema its up section found \
         (- before the up, + after the down):\n\
         type public.item_state (changed)\n\
         \x20 ~ labels\n\
         \x20     - 'draft', 'active'\n\
         \x20     + 'draft', 'active', 'archived'\n"
    );
}

#[tokio::test]
async fn a_down_that_misses_a_constraint_fails_naming_the_constraint() {
    let (_, message) = reversibility_failure("down_misses_constraint").await;
    assert_eq!(
        message,
        "revision 0002_item_sku: its down section does not restore the schema its up section found \
         (- before the up, + after the down):\n\
         table public.items (changed)\n\
         \x20 + constraint items_price_positive: CHECK ((price > (0)::numeric))\n"
    );
}

#[tokio::test]
async fn a_down_that_misses_a_trigger_fails_naming_the_trigger() {
    let (_, message) = reversibility_failure("down_misses_trigger").await;
    assert_eq!(
        message,
        "revision 0002_item_updated_at: its down section does not restore the schema its up section found \
         (- before the up, + after the down):\n\
         table public.items (changed)\n\
         \x20 + trigger items_set_updated_at: CREATE TRIGGER items_set_updated_at BEFORE UPDATE ON public.items \
         FOR EACH ROW EXECUTE FUNCTION public.set_updated_at()\n"
    );
}

#[tokio::test]
async fn the_check_stops_after_the_faulty_down() {
    let db = fresh_db("rev_stops").await;
    let client = db.connect().await.unwrap();
    check_reversible(&fixture("down_misses_index"), &client).await.unwrap_err();
    let ids: Vec<String> = ledger(&client).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["0001_items"], "0002 was reverted by its (faulty) down, 0003 never ran");
}

#[tokio::test]
async fn assert_reversible_panics_with_the_same_message_after_the_line_that_called_it() {
    let db = fresh_db("rev_panics").await;
    let url = db.config();
    let line = line!() + 5;
    let panic = tokio::spawn(async move {
        let (client, connection) = url.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        // A panic inside the future is reported where it is polled; the message names this line.
        assert_reversible(&fixture("down_misses_default"), &client).await;
    })
    .await
    .unwrap_err()
    .into_panic();
    let message = panic.downcast_ref::<String>().expect("a formatted panic message");
    let caller = format!("assert_reversible failed at {}:{line}:9: ", file!());
    assert!(
        message
            .starts_with(&format!("{caller}revision 0002_item_currency: its down section does not restore")),
        "{message}"
    );
    assert!(message.contains("+ numeric(10,2) not null default 0"), "{message}");
}

#[tokio::test]
async fn up_down_up_reports_what_base_still_has() {
    let db = fresh_db("rev_cycle_bad").await;
    let client = db.connect().await.unwrap();
    let set = temp_set(&[(
        "0001_a.sql",
        "-- pgskein: up\nCREATE TABLE a (id int);\nCREATE SEQUENCE a_numbers;\n-- pgskein: down\nDROP TABLE a;\n",
    )])
    .unwrap();
    let err = check_up_down_up(&set, &client).await.unwrap_err();
    assert!(matches!(err, ReversibilityError::BaseNotRestored { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "downgrading from head to base does not restore the schema the upgrade started from \
         (- before the upgrade, + after the downgrade):\n\
         sequence public.a_numbers (added)\n\
         \x20 + definition: bigint start 1 increment 1 minvalue 1 maxvalue 9223372036854775807 cache 1\n"
    );
}

#[tokio::test]
async fn up_down_up_reports_a_downgrade_that_fails() {
    // 0002's down leaves its trigger, so 0001's down cannot drop the function.
    let db = fresh_db("rev_cycle_fails").await;
    let client = db.connect().await.unwrap();
    let err = check_up_down_up(&fixture("down_misses_trigger"), &client).await.unwrap_err();
    let text = chain(&err);
    assert!(text.starts_with("downgrade to base failed: "), "{text}");
    assert!(text.contains("0001_items"), "{text}");
}

#[tokio::test]
async fn a_revision_without_a_down_section_is_named() {
    let db = fresh_db("rev_irreversible").await;
    let client = db.connect().await.unwrap();
    let set = temp_set(&[
        ("0001_a.sql", "-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n"),
        ("0002_b.sql", "-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE TABLE b (id int);\n"),
    ])
    .unwrap();
    let err = check_reversible(&set, &client).await.unwrap_err();
    assert!(
        matches!(&err, ReversibilityError::Irreversible { revision, .. } if revision.as_str() == "0002_b"),
        "{err:?}"
    );
    assert!(ledger(&client).await.is_empty(), "nothing runs when the check cannot be made");
}

#[tokio::test]
async fn a_failing_down_section_is_reported_with_its_revision_and_cause() {
    let db = fresh_db("rev_down_fails").await;
    let client = db.connect().await.unwrap();
    let set = temp_set(&[(
        "0001_a.sql",
        "-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE no_such_table;\n",
    )])
    .unwrap();
    let err = check_reversible(&set, &client).await.unwrap_err();
    assert!(
        matches!(&err, ReversibilityError::Step { revision, direction: Direction::Down, .. } if revision.as_str() == "0001_a"),
        "{err:?}"
    );
    let text = chain(&err);
    assert!(text.starts_with("the down section of revision 0001_a failed"), "{text}");
    assert!(text.contains("no_such_table"), "{text}");
}

#[tokio::test]
async fn repeatable_revisions_count_as_part_of_the_last_versioned_one() {
    let db = fresh_db("rev_repeatable").await;
    let client = db.connect().await.unwrap();
    let set = pgskein::MigrationSet::builder()
        .file(
            "R_item_names.sql",
            b"-- pgskein: repeatable\n-- pgskein: up\nCREATE OR REPLACE VIEW item_names AS SELECT name FROM items;\n\
              -- pgskein: down\nDROP VIEW item_names;\n",
        )
        .file("0001_items.sql", b"-- pgskein: up\nCREATE TABLE items (name text);\n-- pgskein: down\nDROP TABLE items;\n")
        .file(
            "0002_price.sql",
            b"-- pgskein: revises 0001_items\n-- pgskein: up\nALTER TABLE items ADD COLUMN price int;\n\
              -- pgskein: down\nALTER TABLE items DROP COLUMN price;\n",
        )
        .build()
        .unwrap();
    assert_reversible(&set, &client).await;
    assert!(set.status(&client).await.unwrap().pending.is_empty());
    let other = fresh_db("rev_repeatable_cycle").await;
    assert_up_down_up(&set, &other.connect().await.unwrap()).await;
}

#[test]
fn several_heads_are_named() {
    let set = pgskein::MigrationSet::builder()
        .file("0001_a.sql", b"-- pgskein: up\nSELECT 1;\n")
        .file("0002_b.sql", b"-- pgskein: up\nSELECT 1;\n")
        .allow_multiple_heads(true)
        .build()
        .unwrap();
    let err = check_single_head(&set).unwrap_err();
    assert!(matches!(&err, pgskein::Error::MultipleHeads { heads } if heads.len() == 2), "{err:?}");
    let panic =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_single_head(&set))).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("0001_a, 0002_b"), "{message}");
}
