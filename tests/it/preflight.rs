use pgskein::preflight::ProblemKind;
use pgskein::{Migrator, Target};

use crate::common::{catalog, fixture, fresh_db, ledger, temp_set};

#[tokio::test]
async fn preflight_on_a_healthy_database_finds_nothing() {
    let db = fresh_db("preflightok").await;
    let client = db.connect().await.unwrap();
    let report = crate::common::example().preflight(&client, &Target::Head).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.plan.steps.len(), 10);
    assert!(!report.server_version.is_empty());
}

#[tokio::test]
async fn preflight_reports_a_missing_extension_before_any_change() {
    let db = fresh_db("preflightext").await;
    let client = db.connect().await.unwrap();
    let set = temp_set(&[
        ("0001_a.sql", "-- pgskein: up\nCREATE TABLE a (id int);\n-- pgskein: down\nDROP TABLE a;\n"),
        (
            "0002_ext.sql",
            "-- pgskein: revises 0001_a\n-- pgskein: up\nCREATE EXTENSION IF NOT EXISTS no_such_extension;\n",
        ),
    ])
    .unwrap();
    let before = catalog(&client).await;
    let report = set.preflight(&client, &Target::Head).await.unwrap();
    let p = report.problems.iter().find(|p| p.kind == ProblemKind::MissingExtension).expect("reported");
    assert_eq!(p.revision.as_ref().map(|r| r.as_str()), Some("0002_ext"));
    assert!(p.message.contains("no_such_extension"), "{}", p.message);
    assert_eq!(catalog(&client).await, before);
    assert!(ledger(&client).await.is_empty());
}

#[tokio::test]
async fn preflight_reports_a_role_without_create_on_the_schema() {
    let db = fresh_db("preflightpriv").await;
    let admin = db.connect().await.unwrap();
    let role = format!("limited_{}", db.name());
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN; GRANT CONNECT ON DATABASE \"{}\" TO \"{role}\"; \
             CREATE SCHEMA app; REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA app TO \"{role}\"",
            db.name()
        ))
        .await
        .unwrap();
    let mut config = db.config();
    config.user(&role);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let set = temp_set(&[(
        "0001_a.sql",
        "-- pgskein: up\nCREATE TABLE a (id int);\nCREATE TABLE app.b (id int);\n-- pgskein: down\nDROP TABLE app.b;\nDROP TABLE a;\n",
    )])
    .unwrap();
    let report = set.preflight(&client, &Target::Head).await.unwrap();
    let privileges: Vec<&str> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::MissingPrivilege)
        .map(|p| p.message.as_str())
        .collect();
    assert!(privileges.iter().any(|m| m.contains("CREATE on the database")), "{privileges:?}");
    assert!(privileges.iter().any(|m| m.contains("schema \"public\"")), "{privileges:?}");
    assert!(privileges.iter().any(|m| m.contains("schema \"app\"")), "{privileges:?}");
    assert!(ledger(&admin).await.is_empty());
    admin.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\"")).await.unwrap();
}

#[tokio::test]
async fn preflight_reports_a_session_holding_a_lock_on_an_altered_table() {
    let db = fresh_db("preflightlock").await;
    let client = db.connect().await.unwrap();
    let set = fixture("linear");
    set.upgrade(&client, &"0001".parse().unwrap()).await.unwrap();
    let holder = db.connect().await.unwrap();
    holder
        .batch_execute("SET application_name = 'report-job'; BEGIN; SELECT count(*) FROM items")
        .await
        .unwrap();
    let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let before = catalog(&client).await;
    let report = set.preflight(&client, &Target::Head).await.unwrap();
    let lock = report.problems.iter().find(|p| p.kind == ProblemKind::LockHeld).expect("reported");
    assert!(
        lock.message.contains(&format!("pid {pid}")) && lock.message.contains("items"),
        "{}",
        lock.message
    );
    assert!(lock.message.contains("report-job"));
    assert_eq!(catalog(&client).await, before);
    assert_eq!(ledger(&client).await.len(), 1);
    holder.batch_execute("COMMIT").await.unwrap();
}
