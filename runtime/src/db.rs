//! The database: one URL, SQLite or PostgreSQL, through sqlx's `Any`
//! driver, so every service's SQL runs unchanged on both.
//!
//! The SQL the services write stays within what both accept: `$1`
//! placeholders in order, `INSERT … ON CONFLICT … DO NOTHING / DO UPDATE`,
//! `BIGINT` milliseconds for instants, `TEXT` days (`2025-01-27`).
//! Write transactions start with a write, so SQLite takes its write lock at
//! once (waiting on `busy_timeout`) instead of failing when a read lock
//! cannot be upgraded.

use std::sync::Once;
use std::time::Duration;

use sqlx::Executor as _;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

pub use sqlx::AnyPool as Pool;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL must start with sqlite:// or postgres://, not {0:?}")]
    UnsupportedUrl(String),
    #[error("cannot open the database ({url}): {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the database: {0}")]
    Prepare(sqlx::Error),
    #[error("cannot create the SQLite database in {directory}: {reason}")]
    SqliteDirectory { directory: String, reason: String },
}

/// The backend of the database last connected in this process, for the
/// `db.system.name` of spans (`up` runs every service on one database).
static CONNECTED: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();

impl Backend {
    /// OpenTelemetry's `db.system.name` of the database connected, or
    /// `other_sql` before one is.
    pub fn connected_system() -> &'static str {
        match CONNECTED.get() {
            Some(Self::Sqlite) => "sqlite",
            Some(Self::Postgres) => "postgresql",
            None => "other_sql",
        }
    }

    pub fn of(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(redacted(url)))
        }
    }
}

/// The database a single service uses when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://hookmesh.db";

/// The database of the consumer services.
#[derive(Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Database of the consumer services: sqlite://<path> or postgres://user:password@host/db.
    /// `up` defaults to sqlite://<data dir>/hookmesh.db, a single service to sqlite://hookmesh.db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// DATABASE_URL, or the single service's default.
    pub fn url_or_default(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
    }
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("database_url", &self.database_url.as_deref().map(redacted))
            .finish()
    }
}

/// `sqlite://<path>` (created when missing).
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The URL with its credentials hidden, for logs and errors (the one
/// redaction the mesh uses).
pub use hookmesh_contracts::redact::url as redacted;

/// Opens a pool. SQLite gets WAL, a busy timeout, and one connection per
/// pool: writes serialise anyway, and one connection never deadlocks itself.
///
/// SQLite runs with `synchronous = FULL`: every commit is on disk (the WAL
/// is synced) before `COMMIT` returns, and the services acknowledge
/// messages only after that, so an acknowledged event survives a power
/// loss or an operating-system crash, not only a crash of the process.
/// `NORMAL` would sync only at checkpoints: a few milliseconds less per
/// commit, but the last commits before a power loss would be lost although
/// their messages were acknowledged, which exactly-once cannot allow.
pub async fn connect(url: &str) -> Result<Pool, DbError> {
    if let Ok(backend) = Backend::of(url) {
        let _ = CONNECTED.set(backend);
    }
    let (options, url) = options(url)?;
    options
        .connect(&url)
        .await
        .map_err(|source| DbError::Connect {
            url: redacted(&url),
            source,
        })
}

/// A pool that connects on first use, for a database that may be down
/// when the service starts (a lookup replica).
pub fn connect_lazy(url: &str) -> Result<Pool, DbError> {
    let (options, url) = options(url)?;
    options
        .connect_lazy(&url)
        .map_err(|source| DbError::Connect {
            url: redacted(&url),
            source,
        })
}

/// A SQLite URL whose file is created when missing: whatever form the
/// person gave (`sqlite:x.db`, `sqlite://x.db`, `sqlite:///abs/x.db`),
/// unless it names a `mode` of its own. Refused, saying why, when the
/// file's directory does not exist or cannot be written to.
fn sqlite_creating(url: &str) -> Result<String, DbError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path.is_empty() || path == ":memory:";
    if in_memory || query.split('&').any(|pair| pair.starts_with("mode=")) {
        return Ok(url.to_owned());
    }
    let path = std::path::Path::new(path);
    if !path.exists() {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => std::path::Path::new("."),
        };
        let refuse = |reason: String| DbError::SqliteDirectory {
            directory: directory.display().to_string(),
            reason,
        };
        if !directory.is_dir() {
            return Err(refuse("it does not exist; create it first".to_owned()));
        }
        let probe = directory.join(format!(".hookmesh-write-check-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|error| refuse(format!("it cannot be written to ({error})")))?;
        let _ = std::fs::remove_file(&probe);
    }
    let separator = if query.is_empty() { "?" } else { "&" };
    Ok(format!("{url}{separator}mode=rwc"))
}

/// Pool options for `url`, and the URL to connect with.
fn options(url: &str) -> Result<(AnyPoolOptions, String), DbError> {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    let backend = Backend::of(url)?;
    let url = match backend {
        Backend::Sqlite => sqlite_creating(url)?,
        Backend::Postgres => url.to_owned(),
    };
    let options = match backend {
        Backend::Sqlite => {
            AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                        Ok(())
                    })
                })
        }
        // A batch finds its rows by key, a thousand at a time. PostgreSQL's
        // default cost of a random read (4, for spinning disks) makes it scan
        // whole tables for that instead of using the primary keys, several
        // times slower; 1.1 is the usual value for SSDs and cached data.
        Backend::Postgres => {
            AnyPoolOptions::new()
                .max_connections(10)
                .after_connect(|connection, _| {
                    Box::pin(async move {
                        connection.execute("SET random_page_cost = 1.1").await?;
                        Ok(())
                    })
                })
        }
    };
    Ok((options.acquire_timeout(Duration::from_secs(10)), url))
}

/// Applies a service's migrations. Each service numbers its own range
/// (sweep-worker 1xxx, csr-consumer 2xxx, batch-processor 3xxx) and ignores
/// the others', so they can share one database.
pub async fn migrate(pool: &Pool, migrator: &Migrator) -> Result<(), DbError> {
    let mut migrator = Migrator {
        migrations: migrator.migrations.clone(),
        ..Migrator::DEFAULT
    };
    migrator.set_ignore_missing(true);
    migrator.run(pool).await?;
    Ok(())
}

/// Most bind parameters one statement carries: below SQLite's 32 766 and
/// PostgreSQL's 65 535.
const MAX_BINDS: usize = 30_000;

/// Most rows one PostgreSQL statement of arrays (`UNNEST`) carries. Its
/// arrays are held twice while it is sent, as text and then in the
/// connection's write buffer, which keeps that size afterwards: ten thousand
/// events were 5.4 MB. Batches up to this size are one statement per table;
/// a larger one takes a statement per this many rows.
pub const ARRAY_ROWS_PER_STATEMENT: usize = 2_048;

/// Rows of `columns` values each that fit in one statement.
pub fn rows_per_statement(columns: usize) -> usize {
    (MAX_BINDS / columns.max(1)).max(1)
}

impl Backend {
    /// The `n`-th bind placeholder of a statement: `$n` on PostgreSQL, `?`
    /// on SQLite. SQLite treats `$n` as a name, and binding each named
    /// parameter searches the statement's names: quadratic on the
    /// thousand-row statements of a batch. A statement using these must
    /// bind its values in the order the placeholders appear.
    pub fn placeholder(self, n: usize) -> String {
        let mut text = String::new();
        self.push_placeholder(&mut text, n);
        text
    }

    fn push_placeholder(self, sql: &mut String, n: usize) {
        match self {
            Self::Postgres => {
                use std::fmt::Write as _;
                let _ = write!(sql, "${n}");
            }
            Self::Sqlite => sql.push('?'),
        }
    }

    /// `($1, $2), ($3, $4)` (or `(?, ?), (?, ?)`): placeholders for `rows`
    /// rows of `columns` values, numbered from `first`. (sqlx's query
    /// builder writes `?` for the `Any` driver, which PostgreSQL refuses.)
    pub fn values(self, rows: usize, columns: usize, first: usize) -> String {
        let mut sql = String::with_capacity(rows * columns * 6);
        let mut next = first;
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..columns {
                if column > 0 {
                    sql.push_str(", ");
                }
                self.push_placeholder(&mut sql, next);
                next += 1;
            }
            sql.push(')');
        }
        sql
    }
}

/// One column of a batch as a PostgreSQL array in its text form, bound
/// as one `TEXT` parameter and cast in the statement (`$1::text[]`,
/// `$2::bigint[]`): a set-based statement then takes one parameter per
/// column, whatever the number of rows, so its text never changes and it
/// is prepared once per connection (`INSERT … SELECT … FROM UNNEST(…)`).
/// (sqlx's `Any` driver binds no arrays; the text form is PostgreSQL's own
/// input syntax for them.)
#[derive(Debug, Clone)]
pub struct PgArray(String);

impl Default for PgArray {
    fn default() -> Self {
        Self::new()
    }
}

impl PgArray {
    pub fn new() -> Self {
        Self(String::from("{"))
    }

    fn separate(&mut self) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
    }

    /// Appends a text element, quoted (`NULL` for `None`).
    pub fn text(&mut self, value: Option<&str>) -> &mut Self {
        self.separate();
        match value {
            None => self.0.push_str("NULL"),
            Some(value) => {
                self.0.reserve(value.len() + 2);
                self.0.push('"');
                for c in value.chars() {
                    if c == '"' || c == '\\' {
                        self.0.push('\\');
                    }
                    self.0.push(c);
                }
                self.0.push('"');
            }
        }
        self
    }

    /// Appends an integer element (`NULL` for `None`).
    pub fn int(&mut self, value: Option<i64>) -> &mut Self {
        use std::fmt::Write as _;
        self.separate();
        match value {
            None => self.0.push_str("NULL"),
            Some(value) => {
                let _ = write!(self.0, "{value}");
            }
        }
        self
    }

    /// The array's text, to bind.
    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Runs one chunk of an events log's insert on PostgreSQL: `sql` is an
/// `INSERT … SELECT … FROM UNNEST(…) ON CONFLICT DO NOTHING RETURNING
/// stream_sequence` taking `columns` in order and then `now_millis`; the
/// sequences it returns (the events new to the log) are added to `new`.
pub async fn insert_returning_sequences(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    sql: &'static str,
    columns: impl IntoIterator<Item = PgArray>,
    now_millis: i64,
    new: &mut std::collections::HashSet<u64>,
) -> Result<(), sqlx::Error> {
    let mut query = sqlx::query(sql);
    for column in columns {
        query = query.bind(column.finish());
    }
    collect_new_sequences(tx, query.bind(now_millis), new).await
}

/// Runs `query`, an events log's insert `… ON CONFLICT DO NOTHING RETURNING
/// stream_sequence`, and adds the sequences it returns (the events new to
/// the log) to `new`.
pub async fn collect_new_sequences(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    new: &mut std::collections::HashSet<u64>,
) -> Result<(), sqlx::Error> {
    use futures_util::TryStreamExt as _;
    use sqlx::Row as _;
    let mut rows = query.fetch(&mut **tx);
    while let Some(row) = rows.try_next().await? {
        let sequence: i64 = row.try_get(0)?;
        new.insert(sequence as u64);
    }
    Ok(())
}

/// Where a page of a newest-first list resumes: the last row's time (Unix
/// milliseconds) and id. As a cursor it reads `<millis>.<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    pub millis: i64,
    pub id: String,
}

impl Keyset {
    pub fn new(millis: i64, id: impl Into<String>) -> Self {
        Self {
            millis,
            id: id.into(),
        }
    }

    /// A cursor this API gave; None for anything else.
    pub fn parse(cursor: &str) -> Option<Self> {
        let (millis, id) = cursor.split_once('.')?;
        Some(Self::new(millis.parse().ok()?, id))
    }

    pub fn cursor(&self) -> String {
        format!("{}.{}", self.millis, self.id)
    }

    /// The end of a `… WHERE …` statement that reads one page newest
    /// first by `(time, id)`, after `after` when it is set, with placeholders
    /// from `$first`; bind with [`Keyset::bind`]. The page asks one row more
    /// than `limit`, which [`Keyset::page`] uses to tell whether another
    /// page follows.
    pub fn clause(time: &str, id: &str, after: Option<&Self>, first: usize) -> String {
        let order = format!("ORDER BY {time} DESC, {id} DESC");
        match after {
            None => format!(" {order} LIMIT ${first}"),
            Some(_) => format!(
                " AND ({time} < ${first} OR ({time} = ${} AND {id} < ${})) {order} LIMIT ${}",
                first + 1,
                first + 2,
                first + 3
            ),
        }
    }

    /// Binds what [`Keyset::clause`] placed.
    pub fn bind<'q>(
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
        after: Option<&Self>,
        limit: u32,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let query = match after {
            None => query,
            Some(after) => query
                .bind(after.millis)
                .bind(after.millis)
                .bind(after.id.clone()),
        };
        query.bind(i64::from(limit) + 1)
    }

    /// The page of `rows` (read with [`Keyset::clause`]) and the cursor of
    /// the next one, when there is one.
    pub fn page<T>(
        mut rows: Vec<T>,
        limit: u32,
        key_of: impl Fn(&T) -> Self,
    ) -> (Vec<T>, Option<String>) {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let cursor = more.then(|| rows.last().map(|row| key_of(row).cursor()));
        (rows, cursor.flatten())
    }
}

/// Whether `error` is a unique-constraint violation: the database's own
/// verdict that a row (an event, a result) is already there.
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Whether `error` is the database refusing the data itself (a constraint
/// it breaks, a value it cannot store: PostgreSQL's classes 22 and 23,
/// SQLite's constraint, mismatch and too-big codes) rather than being away
/// or failing: the same statement with the same data would fail again.
pub fn is_refusal(error: &sqlx::Error) -> bool {
    use sqlx::error::ErrorKind;
    match error {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation => true,
            _ => db.code().is_some_and(|code| match code.len() {
                // A PostgreSQL SQLSTATE: data exception or integrity violation.
                5 => code.starts_with("22") || code.starts_with("23"),
                // A SQLite (extended) result code: its low byte is the primary
                // code, TOOBIG, CONSTRAINT or MISMATCH.
                _ => code
                    .parse::<u32>()
                    .is_ok_and(|code| matches!(code & 0xff, 18..=20)),
            }),
        },
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(Backend::of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert!(Backend::of("mysql://h/db").is_err());
    }

    #[test]
    fn keyset_pages_resume_after_the_last_row() {
        let after = Keyset::parse("1700000000000.job.a").expect("a cursor");
        assert_eq!(after, Keyset::new(1_700_000_000_000, "job.a"));
        assert_eq!(after.cursor(), "1700000000000.job.a");
        assert_eq!(Keyset::parse("x.job"), None);
        assert_eq!(Keyset::parse("nodot"), None);
        assert_eq!(
            Keyset::clause("t", "id", None, 2),
            " ORDER BY t DESC, id DESC LIMIT $2"
        );
        assert_eq!(
            Keyset::clause("t", "id", Some(&after), 2),
            " AND (t < $2 OR (t = $3 AND id < $4)) ORDER BY t DESC, id DESC LIMIT $5"
        );
        let key = |n: &i64| Keyset::new(*n, n.to_string());
        assert_eq!(
            Keyset::page(vec![9, 8, 7], 2, key),
            (vec![9, 8], Some("8.8".to_owned()))
        );
        assert_eq!(Keyset::page(vec![9, 8], 2, key), (vec![9, 8], None));
    }

    #[test]
    fn placeholders_are_numbered_row_by_row() {
        assert_eq!(
            Backend::Postgres.values(2, 3, 1),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(Backend::Postgres.values(1, 1, 7), "($7)");
        assert_eq!(Backend::Sqlite.values(2, 2, 3), "(?, ?), (?, ?)");
        assert_eq!(rows_per_statement(15), 2000);
    }

    #[test]
    fn arrays_are_written_in_postgresql_input_syntax() {
        let mut texts = PgArray::new();
        texts
            .text(Some("a"))
            .text(None)
            .text(Some(r#"b"c\d"#))
            .text(Some(""));
        assert_eq!(texts.finish(), r#"{"a",NULL,"b\"c\\d",""}"#);
        let mut numbers = PgArray::new();
        numbers.int(Some(-1)).int(None).int(Some(3));
        assert_eq!(numbers.finish(), "{-1,NULL,3}");
        assert_eq!(PgArray::new().finish(), "{}");
    }

    #[test]
    fn sqlite_urls_create_their_file_in_a_directory_that_exists() {
        let directory = std::env::temp_dir().join(format!("hookmesh-db-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let file = directory.join("x.db");
        for url in [
            format!("sqlite://{}", file.display()),
            format!("sqlite:{}", file.display()),
        ] {
            assert_eq!(sqlite_creating(&url).unwrap(), format!("{url}?mode=rwc"));
        }
        let cache = format!("sqlite://{}?cache=shared", file.display());
        assert_eq!(
            sqlite_creating(&cache).unwrap(),
            format!("{cache}&mode=rwc")
        );
        let read_only = format!("sqlite://{}?mode=ro", file.display());
        assert_eq!(sqlite_creating(&read_only).unwrap(), read_only);
        assert_eq!(
            sqlite_creating("sqlite::memory:").unwrap(),
            "sqlite::memory:"
        );
        let missing = format!("sqlite://{}/nope/x.db", directory.display());
        let error = sqlite_creating(&missing).unwrap_err().to_string();
        assert!(
            error.contains("nope") && error.contains("does not exist"),
            "{error}"
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
