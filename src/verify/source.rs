//! `verify`'s view of the source: SQL Server (read in SNAPSHOT transactions; Change Tracking
//! says which keys changed after a version) or PostgreSQL (read in REPEATABLE READ
//! transactions with the same SQL as a target's; each row's `xmin` says whether it changed
//! between two reads).

use std::collections::{BTreeSet, HashMap};

use anyhow::Context;
use tokio_postgres::Client;

use super::target::{Sink, TargetTable};
use super::{Buckets, Rows, BUCKETS_PER_QUERY};
use crate::config::ConnectorConfig;
use crate::event::{TableSchema, Value};
use crate::source::mssql::{queries, value, Connection};
use crate::source::postgres;

/// A connection to the source.
pub enum Source {
    Mssql(Box<Connection>),
    Postgres(Client),
}

/// One table at the source, for one sink (which decides how time values are cut).
pub enum SourceTable {
    Mssql(queries::VerifyQueries),
    Postgres(TargetTable),
}

/// Rows read at the source, with what tells a row changed between two reads: the row's
/// transaction id on PostgreSQL (a new one for every update, even one that writes the same
/// values back); nothing on SQL Server, where Change Tracking tells it.
pub struct SourceRows {
    pub rows: Rows,
    stamps: HashMap<String, String>,
}

impl SourceRows {
    /// Of `keys`, those whose rows differ between `earlier` and this read (present in one
    /// only, other values, or written again).
    pub fn changed_since(&self, earlier: &SourceRows, keys: &BTreeSet<String>) -> BTreeSet<String> {
        keys.iter()
            .filter(|k| {
                self.rows.get(*k).map(|r| &r.0) != earlier.rows.get(*k).map(|r| &r.0)
                    || self.stamps.get(*k) != earlier.stamps.get(*k)
            })
            .cloned()
            .collect()
    }
}

impl Source {
    pub async fn connect(config: &ConnectorConfig) -> anyhow::Result<Source> {
        Ok(match config.source.kind {
            crate::config::SourceKind::Mssql => Source::Mssql(Box::new(
                Connection::connect(&config.source)
                    .await
                    .context("connecting to the source")?,
            )),
            crate::config::SourceKind::Postgres => Source::Postgres(
                postgres::connect(&config.source)
                    .await
                    .context("connecting to the source")?,
            ),
        })
    }

    pub fn table(&self, sink: Sink<'_>, schema: &TableSchema) -> SourceTable {
        match self {
            Source::Mssql(_) => {
                let scale = |c: &crate::event::ColumnSchema| sink.scale(c);
                SourceTable::Mssql(queries::VerifyQueries::new(schema, &scale))
            }
            Source::Postgres(_) => SourceTable::Postgres(TargetTable::postgres_source(schema)),
        }
    }

    pub async fn count_rows(&mut self, schema: &TableSchema) -> anyhow::Result<i64> {
        Ok(match self {
            Source::Mssql(conn) => {
                value::as_i64(&conn.scalar(&queries::count_rows(schema), &[]).await?).unwrap_or(0)
            }
            Source::Postgres(client) => client
                .query_one(&postgres::queries::count_rows(schema), &[])
                .await
                .context("counting the source table's rows")?
                .get(0),
        })
    }

    /// Begin a read of one committed state; the version it holds at least (a sink past it has
    /// applied everything the read sees).
    pub async fn begin(&mut self) -> anyhow::Result<i64> {
        match self {
            Source::Mssql(conn) => {
                conn.batch(queries::BEGIN_SNAPSHOT).await?;
                Ok(conn.current_version().await?.unwrap_or(0))
            }
            Source::Postgres(client) => {
                client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .context("beginning a read at the source")?;
                // The transaction's snapshot is taken by this statement, before the position
                // is read: every commit it sees is below the position. The position less one
                // is the poller's watermark for it.
                let lsn: String = client
                    .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
                    .await
                    .context("reading the source's WAL position")?
                    .get(0);
                Ok(postgres::parse_lsn(&lsn)? as i64 - 1)
            }
        }
    }

    pub async fn end(&mut self) -> anyhow::Result<()> {
        match self {
            Source::Mssql(conn) => conn.batch(queries::COMMIT).await?,
            Source::Postgres(client) => client.batch_execute("COMMIT").await?,
        }
        Ok(())
    }

    pub async fn buckets(&mut self, table: &SourceTable, buckets: u32) -> anyhow::Result<Buckets> {
        match (self, table) {
            (Source::Mssql(conn), SourceTable::Mssql(q)) => {
                let rows = conn
                    .rows(&q.buckets(), &[Value::Int(buckets.into())])
                    .await
                    .context("hashing the source table")?;
                Ok(rows
                    .iter()
                    .filter_map(|r| {
                        Some((
                            value::as_i64(&r[0])? as u32,
                            (
                                value::as_i64(&r[1])?,
                                value::as_i64(&r[2])?,
                                value::as_i64(&r[3])?,
                            ),
                        ))
                    })
                    .collect())
            }
            (Source::Postgres(client), SourceTable::Postgres(t)) => {
                super::read_target_buckets(client, t, buckets).await
            }
            _ => unreachable!("a table of another source"),
        }
    }

    /// The key text and row hash of every row in the buckets `list` of `buckets`.
    pub async fn rows(
        &mut self,
        table: &SourceTable,
        buckets: u32,
        list: &[u32],
    ) -> anyhow::Result<SourceRows> {
        let mut out = SourceRows {
            rows: Rows::new(),
            stamps: HashMap::new(),
        };
        match (self, table) {
            (Source::Mssql(conn), SourceTable::Mssql(q)) => {
                for part in list.chunks(BUCKETS_PER_QUERY) {
                    let keys = q.key_count();
                    for r in conn
                        .rows(&q.bucket_rows(part.len()), &bucket_params(buckets, part))
                        .await?
                    {
                        if let (Some(k), Some(h)) =
                            (value::as_str(&r[keys]), value::as_str(&r[keys + 1]))
                        {
                            out.rows.insert(k.to_string(), (h.to_lowercase(), 1));
                        }
                    }
                }
            }
            (Source::Postgres(client), SourceTable::Postgres(t)) => {
                for part in list.chunks(BUCKETS_PER_QUERY) {
                    for r in client
                        .query(&t.bucket_rows(buckets, part), &[])
                        .await
                        .context("listing the source table's rows")?
                    {
                        let key: String = r.get(0);
                        out.stamps.insert(key.clone(), r.get(2));
                        out.rows.insert(key, (r.get(1), 1));
                    }
                }
            }
            _ => unreachable!("a table of another source"),
        }
        Ok(out)
    }
}

/// The parameters of a SQL Server query over the buckets `part` of `buckets`: the count, then
/// the buckets.
pub fn bucket_params(buckets: u32, part: &[u32]) -> Vec<Value> {
    std::iter::once(buckets)
        .chain(part.iter().copied())
        .map(|b| Value::Int(b.into()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rows: &[(&str, &str, &str)]) -> SourceRows {
        SourceRows {
            rows: rows
                .iter()
                .map(|(k, h, _)| (k.to_string(), (h.to_string(), 1)))
                .collect(),
            stamps: rows
                .iter()
                .map(|(k, _, x)| (k.to_string(), x.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_row_written_between_two_reads_changed_even_with_the_same_values() {
        let earlier = read(&[("+1", "a", "10"), ("+2", "b", "11"), ("+3", "c", "12")]);
        let later = read(&[("+1", "a", "10"), ("+2", "b", "20"), ("+4", "d", "21")]);
        let keys = ["+1", "+2", "+3", "+4", "+5"].map(String::from).into();
        // +1 untouched; +2 written again (same values, new xmin); +3 deleted; +4 inserted;
        // +5 absent from both.
        assert_eq!(
            later.changed_since(&earlier, &keys),
            ["+2", "+3", "+4"].map(String::from).into()
        );
    }
}
