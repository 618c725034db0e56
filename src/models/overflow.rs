//! A value longer than its reporting column. The seed's COPY cut such values silently
//! (`TRUNCATECOLUMNS`); here a model says what to do (`-- on_overflow: truncate | fail`,
//! default `truncate`), and every cut value is logged with model, column and key and counted.
//! Key columns are never cut (two keys could become one): a long key fails the refresh.
//!
//! Checking costs a pass over the model's rows, so it is paid only by models that met such a
//! value: a refresh inserts straight into the target; when the target rejects a value as too
//! long, the model is marked, the flush fails with [`RefreshError::Overflow`] (transient: the
//! sink retries it) and from then on the model's rows go through a temporary table where the
//! long values are found, reported, and cut. A transaction cannot go on after the rejected
//! statement on Redshift (no savepoints), hence the retry.

use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;
use tracing::warn;

use super::{quote, ColumnType, Model, Models, OnOverflow};

/// The rows of the model being checked.
const ROWS: &str = "edfi_cdc_model_rows";
/// Values logged one by one per model, column and refresh; the rest are counted in one line.
const LOGGED: i64 = 20;

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    /// A value too long for its column, met for the first time: the transaction is aborted;
    /// run it again and the model's values are checked.
    #[error(
        "reporting model {model}: a value is too long for its column; \
         refreshing it again with every value checked"
    )]
    Overflow { model: String },
    /// The first value too long, named, in a model with `on_overflow = "fail"` or in a key
    /// column (never cut: two keys could become one).
    #[error("{0}")]
    Rejected(String),
}

/// Whether the target refused a value as longer than its column (Redshift says "value too long"
/// too, in its own words).
fn too_long(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.code() == &SqlState::STRING_DATA_RIGHT_TRUNCATION
            || db.message().to_ascii_lowercase().contains("value too long")
    })
}

impl Models {
    /// Insert the rows of `select` (`m`'s, with its stand-ins; `clause` a clause over the model's
    /// columns after them: a `WHERE` choosing rows, or an `ORDER BY` they are written in) into
    /// `into`, `m`'s table or a table like it: (rows inserted, values cut).
    pub(super) async fn insert(
        &self,
        tx: &Transaction<'_>,
        m: &Model,
        into: &str,
        select: &str,
        clause: Option<&str>,
    ) -> Result<(u64, u64), RefreshError> {
        let checked = self
            .checked
            .lock()
            .expect("never poisoned: no panics while held")
            .contains(&m.name);
        if checked {
            return self.insert_checked(tx, m, into, select, clause).await;
        }
        let cols = m.column_list();
        let sql = match clause {
            None => format!("INSERT INTO {into} ({cols})\n{select}"),
            Some(clause) => {
                format!("INSERT INTO {into} ({cols}) SELECT {cols} FROM ({select}) edfi_cdc_model {clause}")
            }
        };
        match tx.execute(&sql, &[]).await {
            Ok(n) => Ok((n, 0)),
            Err(e) if too_long(&e) => {
                self.checked
                    .lock()
                    .expect("never poisoned: no panics while held")
                    .insert(m.name.clone());
                Err(RefreshError::Overflow {
                    model: m.name.clone(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Models::insert`] through a temporary table: find the values longer than their
    /// columns, report them, and insert them cut (or fail on the first, as the model says).
    async fn insert_checked(
        &self,
        tx: &Transaction<'_>,
        m: &Model,
        into: &str,
        select: &str,
        clause: Option<&str>,
    ) -> Result<(u64, u64), RefreshError> {
        // A value too long here is one the model's own SELECT cast to a shorter type.
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {ROWS} AS SELECT * FROM ({}) edfi_cdc_model {}",
            select,
            clause.unwrap_or("")
        ))
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) if too_long(&e) => RefreshError::Rejected(format!(
                "reporting model {}: its SELECT casts a value to a type too short for it: {}",
                m.name,
                db.message()
            )),
            _ => e.into(),
        })?;
        // Redshift's varchar(n) holds n bytes, PostgreSQL's n characters (and PostgreSQL takes
        // a value too long only by trailing spaces, dropping them: not a cut).
        let (length, trim, unit) = if self.postgres {
            ("CHAR_LENGTH", "RTRIM", "characters")
        } else {
            ("OCTET_LENGTH", "", "bytes")
        };
        let key: Vec<String> = m
            .key
            .iter()
            .map(|k| format!("CAST({} AS varchar(256))", quote(k)))
            .collect();
        let mut cut = 0u64;
        let mut exprs = Vec::new();
        for c in &m.columns {
            let col = quote(&c.name);
            let limit = match c.ty {
                ColumnType::Varchar(n) | ColumnType::Char(n) => n,
                _ => {
                    exprs.push(col);
                    continue;
                }
            };
            exprs.push(self.cut(&col, limit));
            let over = format!("{length}({trim}({col})) > {limit}");
            let count: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {ROWS} WHERE {over}"), &[])
                .await?
                .get(0);
            if count == 0 {
                continue;
            }
            let rows = tx
                .query(
                    &format!(
                        "SELECT {}, {length}({col}) FROM {ROWS} WHERE {over} ORDER BY 1 LIMIT {LOGGED}",
                        key.join(", ")
                    ),
                    &[],
                )
                .await?;
            for r in &rows {
                let keys: Vec<String> = m
                    .key
                    .iter()
                    .enumerate()
                    .map(|(i, k)| format!("{k}={}", r.get::<_, Option<&str>>(i).unwrap_or("NULL")))
                    .collect();
                let keys = keys.join(", ");
                let got: i32 = r.get(m.key.len());
                let why = if m.key.contains(&c.name) {
                    Some("a key column is never cut")
                } else if m.on_overflow == OnOverflow::Fail {
                    Some("on_overflow = \"fail\"")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(RefreshError::Rejected(format!(
                        "reporting model {}: column {} ({}): a value of {got} {unit} at {keys} ({why})",
                        m.name, c.name, c.ty
                    )));
                }
                warn!(model = %m.name, column = %c.name, key = %keys, length = got, limit, unit,
                    "a value too long for its reporting column, cut to it");
            }
            if count > LOGGED {
                warn!(model = %m.name, column = %c.name, more = count - LOGGED, limit, unit,
                    "more values too long for the reporting column, cut to it");
            }
            cut += count as u64;
        }
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO {into} ({}) SELECT {} FROM {ROWS}",
                    m.column_list(),
                    exprs.join(", ")
                ),
                &[],
            )
            .await?;
        tx.batch_execute(&format!("DROP TABLE {ROWS}")).await?;
        Ok((inserted, cut))
    }

    /// `col` cut to fit `n`: `n` characters on PostgreSQL. On Redshift (`n` bytes) whole
    /// characters, at most `n` bytes of them: the first `n` characters less one per byte they
    /// exceed `n` by (each dropped character is at least one byte), but never fewer than `n / 4`
    /// (a character is at most four bytes). Both bounds fit; text of multi-byte characters may
    /// keep fewer characters than would fit.
    fn cut(&self, col: &str, n: u32) -> String {
        if self.postgres {
            format!("LEFT({col}, {n})")
        } else {
            format!(
                "LEFT({col}, GREATEST({quarter}, {twice} - OCTET_LENGTH(LEFT({col}, {n}))))",
                quarter = n / 4,
                twice = 2 * n,
            )
        }
    }
}
