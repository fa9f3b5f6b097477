//! The PostgreSQL server the WAN tests also run their central on (the one
//! `GHATTA_TEST_DATABASE_URL` names; `.ci/postgres.sh` starts a throwaway one). Locally
//! without it the PostgreSQL variants say they were skipped; on CI (`CI=true`) a missing
//! server fails them, as the central's own store suite does.

/// The variable naming the test server (a database the tests may create databases in).
const TEST_DATABASE_URL_VAR: &str = "GHATTA_TEST_DATABASE_URL";

/// The test server's URL, or `None` (said on stderr) when it is not set locally.
pub(crate) fn test_database_url(test: &str) -> Option<String> {
    match std::env::var(TEST_DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{test}: {TEST_DATABASE_URL_VAR} is not set, and CI=true: the WAN tests must run against PostgreSQL on CI; source .ci/postgres.sh before cargo test"
        ),
        _ => {
            eprintln!(
                "{test}: skipped against PostgreSQL ({TEST_DATABASE_URL_VAR} is not set; `. .ci/postgres.sh` starts a throwaway server)"
            );
            None
        }
    }
}

/// A fresh, empty database `name` on the server `url` names; answers its URL (the central
/// migrates it when it connects).
pub(crate) async fn fresh_database(url: &str, name: &str) -> String {
    let (admin, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test server answers");
    let conn = tokio::spawn(conn);
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .expect("a fresh test database");
    }
    drop(admin);
    let _ = conn.await;
    format!(
        "{}/{name}",
        url.rsplit_once('/').map_or(url, |(base, _)| base)
    )
}

/// Held shared by every test that uses the test server, and exclusively by the one that stops
/// it, so no other test sees the server go away under it (the central's own suite has the same
/// lock for its crash test; cargo runs the two test binaries one after the other).
static SERVER: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The server for a test that only uses it.
pub(crate) fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|e| e.into_inner())
}

/// The server for the test that stops and starts it.
pub(crate) fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|e| e.into_inner())
}

/// The test server's `ctl.sh stop|start` (written by `.ci/postgres.sh`, run as the user the
/// server runs as); `stop` is `pg_ctl -m immediate`, a crash.
pub(crate) fn ctl(what: &str) {
    let dir = std::env::var("GHATTA_TEST_PGDATA").expect("GHATTA_TEST_PGDATA");
    let out = std::process::Command::new("sh")
        .arg(format!("{dir}/ctl.sh"))
        .arg(what)
        .output()
        .expect("ctl.sh runs");
    assert!(
        out.status.success(),
        "ctl.sh {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the server is one `.ci/postgres.sh` started (the fault test needs its ctl.sh);
/// on CI it must be.
pub(crate) fn can_stop(test: &str) -> bool {
    if std::env::var("GHATTA_TEST_PGDATA").is_ok() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{test}: GHATTA_TEST_PGDATA is not set, and CI=true: start the server with .ci/postgres.sh"
    );
    eprintln!("{test}: skipped (the server is not one .ci/postgres.sh started)");
    false
}

/// A runtime with I/O for the simulator's tests, whose own runtime has none (a paused clock
/// and nothing else): the central's PostgreSQL queries run here (`PgStore::on_runtime`).
pub(crate) fn io_runtime() -> tokio::runtime::Handle {
    static IO: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("an I/O runtime")
    })
    .handle()
    .clone()
}

/// Runs `f` on [`io_runtime`] from a blocking task of the caller's (which holds a paused
/// clock still meanwhile).
pub(crate) async fn on_io<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let io = io_runtime();
    tokio::task::spawn_blocking(move || io.block_on(f))
        .await
        .expect("the I/O task")
}

/// Runs a PostgreSQL variant of a test, `run(server URL)`, holding the server shared; says it
/// was skipped when there is no server (on CI that fails instead).
pub(crate) fn variant(test: &str, run: impl FnOnce(String)) {
    let Some(url) = test_database_url(test) else {
        return;
    };
    let _server = shared();
    run(url);
}

/// A fresh database `name` on the server `pg` names, as a URL; `None` (redb) without one.
pub(crate) async fn database_for(pg: &Option<String>, name: &str) -> Option<String> {
    match pg {
        Some(url) => Some(fresh_database(url, name).await),
        None => None,
    }
}

/// As [`database_for`], from a runtime without I/O (the simulator's), on [`io_runtime`].
pub(crate) async fn database_off_runtime(
    pg: &Option<String>,
    name: &'static str,
) -> Option<String> {
    let pg = pg.clone();
    on_io(async move { database_for(&pg, name).await }).await
}
