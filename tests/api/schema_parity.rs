//! The two migration sets (`migrations/` for SQLite, `migrations/postgres/`)
//! describe one schema: both are applied to empty databases and compared
//! table by table, column by column (name, type under the documented
//! mapping, NOT NULL) and index by index, with PostgreSQL's extras for
//! several nodes listed here by name. A column added to one set only fails
//! the comparison. Needs PostgreSQL (THREADLINE_TEST_DATABASE_URL); on
//! SQLite the comparison says it skips, and only the comparison's own check
//! runs.

use std::collections::{BTreeMap, BTreeSet};

use crate::helpers::pg::{self, TestDatabase};

/// Tables only PostgreSQL has: the log's position counter (commit order
/// across nodes), connect grants (redeemable on any node) and the applied
/// migration number (SQLite keeps it in `PRAGMA user_version`).
const PG_ONLY_TABLES: [&str; 3] = ["log_head", "grants", "schema_version"];
/// Columns only PostgreSQL has: a webhook's delivery lease (one node
/// delivers per endpoint).
const PG_ONLY_COLUMNS: [(&str, &str); 2] =
    [("webhooks", "lease_owner"), ("webhooks", "lease_until")];
/// Indexes only PostgreSQL has: the revocation watcher's poll of revoked
/// keys, and the grants' expiry (on a PostgreSQL-only table).
const PG_ONLY_INDEXES: [&str; 2] = ["login_keys_revoked", "grants_by_expiry"];

/// One column: its type under the mapping, and whether it is NOT NULL.
type Columns = BTreeMap<String, (String, bool)>;

/// A schema as compared: tables with their columns, and index names.
#[derive(Debug, Default, Clone)]
struct Schema {
    tables: BTreeMap<String, Columns>,
    indexes: BTreeSet<String>,
}

/// The mapping: INTEGER ↔ BIGINT (or INTEGER), BLOB ↔ BYTEA, TEXT ↔ TEXT.
/// Anything else keeps its own name, and so differs unless both agree.
fn sqlite_type(declared: &str) -> String {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" => "integer".into(),
        "BLOB" => "bytes".into(),
        "TEXT" => "text".into(),
        other => format!("sqlite {other}"),
    }
}

fn pg_type(data_type: &str) -> String {
    match data_type {
        "bigint" | "integer" => "integer".into(),
        "bytea" => "bytes".into(),
        "text" => "text".into(),
        other => format!("postgres {other}"),
    }
}

/// What a freshly migrated SQLite file holds.
fn sqlite_schema() -> Schema {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = threadline::store::open_connection(&dir.path().join("parity.db"))
        .expect("the SQLite migrations apply");
    let mut schema = Schema::default();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in tables {
        let mut stmt = conn
            .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)")
            .unwrap();
        let columns = stmt
            .query_map([&table], |r| {
                let (name, declared): (String, String) = (r.get(0)?, r.get(1)?);
                let (not_null, pk): (bool, i64) = (r.get(2)?, r.get(3)?);
                // A key column is NOT NULL on PostgreSQL, whatever it says.
                Ok((name, (sqlite_type(&declared), not_null || pk > 0)))
            })
            .unwrap()
            .collect::<Result<Columns, _>>()
            .unwrap();
        schema.tables.insert(table, columns);
    }
    // Named indexes only: a UNIQUE or PRIMARY KEY's own index has no SQL.
    schema.indexes = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    schema
}

/// What a freshly migrated PostgreSQL database holds.
fn pg_schema(url: &str) -> Schema {
    std::thread::scope(|s| {
        s.spawn(|| {
            drop(threadline::store::pg::open_connection(url).expect("the PG migrations apply"));
            let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
            let mut schema = Schema::default();
            let rows = c
                .query(
                    "SELECT c.table_name::text, c.column_name::text, c.data_type::text,
                            c.is_nullable = 'NO'
                     FROM information_schema.columns c
                     JOIN information_schema.tables t
                       ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                     WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'",
                    &[],
                )
                .expect("columns");
            for r in rows {
                let (table, column, ty, not_null): (String, String, String, bool) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                schema
                    .tables
                    .entry(table)
                    .or_default()
                    .insert(column, (pg_type(&ty), not_null));
            }
            // Named indexes only: those of a UNIQUE or PRIMARY KEY
            // constraint carry the constraint's name.
            schema.indexes = c
                .query(
                    "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'
                     AND indexname NOT IN (SELECT conname FROM pg_constraint)",
                    &[],
                )
                .expect("indexes")
                .iter()
                .map(|r| r.get(0))
                .collect();
            schema
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Every way the two differ, once PostgreSQL's listed extras are set
/// aside; also each listed extra PostgreSQL lacks (the lists stay true).
fn differences(sqlite: &Schema, pg: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let mut pg = pg.clone();
    for table in PG_ONLY_TABLES {
        if pg.tables.remove(table).is_none() {
            out.push(format!("listed PostgreSQL-only table {table} is missing"));
        }
    }
    for (table, column) in PG_ONLY_COLUMNS {
        let removed = pg.tables.get_mut(table).and_then(|c| c.remove(column));
        if removed.is_none() {
            out.push(format!(
                "listed PostgreSQL-only column {table}.{column} is missing"
            ));
        }
    }
    for index in PG_ONLY_INDEXES {
        if !pg.indexes.remove(index) {
            out.push(format!("listed PostgreSQL-only index {index} is missing"));
        }
    }
    let names: BTreeSet<&String> = sqlite.tables.keys().chain(pg.tables.keys()).collect();
    for table in names {
        let (Some(lite), Some(post)) = (sqlite.tables.get(table), pg.tables.get(table)) else {
            let only = if sqlite.tables.contains_key(table) {
                "SQLite"
            } else {
                "PostgreSQL"
            };
            out.push(format!("table {table} only on {only}"));
            continue;
        };
        let columns: BTreeSet<&String> = lite.keys().chain(post.keys()).collect();
        for column in columns {
            match (lite.get(column), post.get(column)) {
                (Some(l), Some(p)) if l == p => {}
                (Some(l), Some(p)) => out.push(format!(
                    "{table}.{column}: SQLite (type, NOT NULL) {l:?}, PostgreSQL {p:?}"
                )),
                (Some(_), None) => out.push(format!("column {table}.{column} only on SQLite")),
                (None, _) => out.push(format!("column {table}.{column} only on PostgreSQL")),
            }
        }
    }
    for index in sqlite.indexes.symmetric_difference(&pg.indexes) {
        let only = if sqlite.indexes.contains(index) {
            "SQLite"
        } else {
            "PostgreSQL"
        };
        out.push(format!("index {index} only on {only}"));
    }
    out
}

#[test]
fn both_migration_sets_make_the_same_tables_columns_and_indexes() {
    let Some(db) = TestDatabase::create() else {
        eprintln!("skipped on SQLite: comparing with the PostgreSQL migrations needs THREADLINE_TEST_DATABASE_URL");
        return;
    };
    let (sqlite, pg) = (sqlite_schema(), pg_schema(db.url()));
    assert!(
        sqlite.tables.len() >= 12 && sqlite.tables.contains_key("messages"),
        "the SQLite schema was read: {:?}",
        sqlite.tables.keys()
    );
    assert_eq!(
        pg::scalar(db.url(), "SELECT version FROM schema_version"),
        threadline::store::migrate::LATEST,
        "both sets have as many migrations"
    );
    let found = differences(&sqlite, &pg);
    assert!(
        found.is_empty(),
        "the migration sets differ (add the change to both, or list a \
         PostgreSQL-only extra in this test and docs/architecture.md):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_column_added_to_one_set_only_is_a_difference() {
    // Runs on either backend: the comparison itself, on a small schema.
    let table = |cols: &[(&str, &str, bool)]| -> Columns {
        cols.iter()
            .map(|(n, t, nn)| ((*n).to_owned(), ((*t).to_owned(), *nn)))
            .collect()
    };
    let mut sqlite = Schema::default();
    sqlite.tables.insert(
        "notes".into(),
        table(&[("id", "integer", true), ("body", "text", true)]),
    );
    sqlite.indexes.insert("notes_by_body".into());
    let mut pg = sqlite.clone();
    for name in PG_ONLY_TABLES {
        pg.tables.insert(name.into(), Columns::new());
    }
    pg.tables
        .insert("webhooks".into(), table(&[("lease_owner", "text", false)]));
    pg.tables
        .get_mut("webhooks")
        .unwrap()
        .insert("lease_until".into(), ("postgres timestamp".into(), false));
    sqlite.tables.insert("webhooks".into(), Columns::new());
    pg.indexes
        .extend(PG_ONLY_INDEXES.iter().map(|i| (*i).to_owned()));
    assert_eq!(differences(&sqlite, &pg), Vec::<String>::new(), "the same");

    let mut added = pg.clone();
    added
        .tables
        .get_mut("notes")
        .unwrap()
        .insert("color".into(), ("text".into(), false));
    assert_eq!(
        differences(&sqlite, &added),
        ["column notes.color only on PostgreSQL"]
    );
    let mut nullable = pg.clone();
    nullable
        .tables
        .get_mut("notes")
        .unwrap()
        .get_mut("body")
        .unwrap()
        .1 = false;
    assert_eq!(differences(&sqlite, &nullable).len(), 1, "NOT NULL differs");
    let mut retyped = pg.clone();
    retyped
        .tables
        .get_mut("notes")
        .unwrap()
        .get_mut("body")
        .unwrap()
        .0 = "bytes".into();
    assert_eq!(differences(&sqlite, &retyped).len(), 1, "the type differs");
    let mut unindexed = pg;
    unindexed.indexes.remove("notes_by_body");
    assert_eq!(
        differences(&sqlite, &unindexed),
        ["index notes_by_body only on SQLite"]
    );
}
