//! Round trips, counted on the wire by a proxy between the client and the
//! server: a start at head costs one, and each SQL revision one more, however
//! many revisions the set has (SPEC §5 and §6). A round trip is a burst of
//! client messages sent after the server last spoke: pipelined requests make
//! one burst.

use std::sync::{Arc, Mutex};

use pgskein::{MigrationSet, Migrator, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::fresh_db;

#[derive(Default)]
struct Wire {
    round_trips: usize,
    /// The server sent something since the client last did.
    answered: bool,
}

/// A client connected through a counting proxy, and the count.
async fn proxied(db: &pgskein::testing::TestDatabase) -> Option<(tokio_postgres::Client, Arc<Mutex<Wire>>)> {
    let config = db.config();
    let (Some(tokio_postgres::config::Host::Unix(dir)), Some(&port)) =
        (config.get_hosts().first().cloned(), config.get_ports().first())
    else {
        println!("skipped: counting round trips needs the throwaway server's Unix socket");
        return None;
    };
    let upstream = dir.join(format!(".s.PGSQL.{port}"));
    let proxy_dir = std::env::temp_dir().join(format!("pgskein-rt-{}-{}", std::process::id(), db.name()));
    let _ = std::fs::remove_dir_all(&proxy_dir);
    std::fs::create_dir_all(&proxy_dir).unwrap();
    let listener = tokio::net::UnixListener::bind(proxy_dir.join(format!(".s.PGSQL.{port}"))).unwrap();
    let socket_dir = proxy_dir.clone();
    let wire = Arc::new(Mutex::new(Wire { answered: true, ..Wire::default() }));
    tokio::spawn({
        let wire = wire.clone();
        async move {
            let (client_side, _) = listener.accept().await.unwrap();
            let server_side = tokio::net::UnixStream::connect(upstream).await.unwrap();
            let (mut cr, mut cw) = client_side.into_split();
            let (mut sr, mut sw) = server_side.into_split();
            let down = {
                let wire = wire.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        wire.lock().unwrap().answered = true;
                    }
                })
            };
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                {
                    let mut w = wire.lock().unwrap();
                    if w.answered {
                        w.round_trips += 1;
                        w.answered = false;
                    }
                }
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = down.await;
            let _ = std::fs::remove_dir_all(&proxy_dir);
        }
    });
    let mut through = tokio_postgres::Config::new();
    through.host_path(&socket_dir).port(port).dbname(db.name());
    if let Some(user) = config.get_user() {
        through.user(user);
    }
    if let Some(password) = config.get_password() {
        through.password(password);
    }
    let (client, connection) = through.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    Some((client, wire))
}

/// A chain of `n` small revisions.
fn chain(n: usize) -> MigrationSet {
    let mut b = MigrationSet::builder();
    for i in 1..=n {
        let revises = if i > 1 { format!("-- pgskein: revises {:04}_t\n", i - 1) } else { String::new() };
        let text = format!("{revises}-- pgskein: up\nCREATE TABLE t{i} (id int PRIMARY KEY, v text);\n");
        b = b.file(&format!("{i:04}_t.sql"), text.as_bytes());
    }
    b.build().unwrap()
}

async fn count<F: std::future::Future>(wire: &Mutex<Wire>, f: F) -> (usize, F::Output) {
    let before = wire.lock().unwrap().round_trips;
    let out = f.await;
    (wire.lock().unwrap().round_trips - before, out)
}

#[tokio::test]
async fn a_start_at_head_costs_one_round_trip_and_each_sql_revision_one_more() {
    let db = fresh_db("round_trips").await;
    let Some((client, wire)) = proxied(&db).await else { return };
    for n in [10, 500] {
        let set = chain(n);
        set.run(&client).await.unwrap();
        let (trips, report) = count(&wire, set.run(&client)).await;
        assert!(report.unwrap().fast_path);
        assert_eq!(trips, 1, "a start at head with {n} revisions");
        client.batch_execute("DROP SCHEMA pgskein CASCADE").await.unwrap();
        for i in 1..=n {
            client.batch_execute(&format!("DROP TABLE IF EXISTS t{i}")).await.unwrap();
        }
    }
    // Applying 1 revision and applying 6: five round trips apart.
    let set = chain(12);
    set.upgrade(&client, &Target::Relative(1)).await.unwrap();
    let (one, r) = count(&wire, set.upgrade(&client, &Target::Relative(1))).await;
    assert_eq!(r.unwrap().steps.len(), 1);
    let (six, r) = count(&wire, set.upgrade(&client, &Target::Relative(6))).await;
    assert_eq!(r.unwrap().steps.len(), 6);
    assert_eq!(six - one, 5, "one round trip per SQL revision (one run: {one}, six: {six})");
    // A stamp never finds nothing to do from the digest, so it sends no
    // fast-path query; its records go in one pipelined transaction, whose
    // COMMIT follows the answers: as many round trips as an upgrade of one
    // revision, however many revisions it records.
    let (stamped, r) = count(&wire, set.stamp(&client, &"0007_t".parse().unwrap())).await;
    assert_eq!(r.unwrap().steps.len(), 1);
    assert_eq!(stamped, one, "a stamp of one revision: {stamped}, an upgrade of one: {one}");
    let (stamped_four, r) = count(&wire, set.stamp(&client, &"0003_t".parse().unwrap())).await;
    assert_eq!(r.unwrap().steps.len(), 4);
    assert_eq!(stamped_four, stamped, "a stamp of four revisions: {stamped_four}, of one: {stamped}");
}
