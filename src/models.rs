//! Reporting models: one SQL file per reporting table, rebuilt from the replicated ODS tables in
//! the transaction that changed them, so a report sees the models and the data at one source
//! version. `docs/models.md` describes the file format and the refresh semantics.
//!
//! A model file is `connectors/models/<group>/<name>.sql`:
//!
//! ```sql
//! -- model: enrollment.studentenrollment
//! -- inputs: edfi.studentschoolassociation, edfi.student
//! CREATE TABLE enrollment.studentenrollment (
//!     studentnumber varchar(32) NOT NULL,
//!     PRIMARY KEY (studentnumber)
//! );
//! SELECT ... FROM edfi.studentschoolassociation ssa JOIN edfi.student s ON ...;
//! ```
//!
//! Loading checks every file before anything connects: the header names the table the
//! `CREATE TABLE` creates, the declared inputs equal the tables the `SELECT` references (every
//! `edfi.<table>`, and every other model it reads), each `edfi` input is a replicated table of an
//! enabled group, the types are ones both PostgreSQL and Redshift have, and the SQL avoids
//! constructs only one of them has. Models are kept in dependency order (a model reading
//! another model comes after it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, NaiveDateTime, Utc};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::GenericClient;

use crate::config::{ConnectorConfig, Deletes};
use crate::sink::redshift::sql::DELETED_AT;

mod check;
mod overflow;
mod parse;
mod refresh;

use check::target_columns;
pub use check::{has_column, table_exists};
use parse::{in_schema, is_ident, load_groups, mask, qualified_names};
use refresh::stand_in_ctes;

pub use overflow::RefreshError;

/// The schema of the replicated ODS tables that models read.
pub const INPUT_SCHEMA: &str = "edfi";

/// The schema of the custom datasets models may read besides the ODS: tables that another
/// connector carries into the target (`connectors/staging-custom.toml`) or that are loaded
/// there by other means.
pub const CUSTOM_SCHEMA: &str = "custom";

/// `CREATE TABLE` of the custom inputs each model last read: what each looked like then.
pub const MODEL_INPUTS_DDL: &str = "CREATE TABLE IF NOT EXISTS edfi_cdc.model_inputs (
    model varchar(255) NOT NULL,
    input varchar(255) NOT NULL,
    seen varchar(255) NOT NULL,
    PRIMARY KEY (model, input)
)";

/// A custom dataset a model reads (`-- custom: custom.table (column type, …)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomInput {
    /// `custom.table`, lower-case.
    pub name: String,
    /// The columns the model reads, with their types: while the table is not in the target,
    /// the model reads an empty table of these columns instead, and so falls back to its ODS
    /// values.
    pub columns: Vec<Column>,
}

/// One problem with one model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelProblem {
    pub file: PathBuf,
    pub reason: String,
}

impl fmt::Display for ModelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.reason)
    }
}

/// Every problem found while loading the model files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ModelError(pub Vec<ModelProblem>);

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid reporting models ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// A column type both PostgreSQL 15 and Amazon Redshift have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    SmallInt,
    Integer,
    BigInt,
    Decimal(u8, u8),
    Boolean,
    Date,
    Timestamp,
    DoublePrecision,
    Varchar(u32),
    Char(u32),
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::SmallInt => f.write_str("smallint"),
            ColumnType::Integer => f.write_str("integer"),
            ColumnType::BigInt => f.write_str("bigint"),
            ColumnType::Decimal(p, s) => write!(f, "decimal({p},{s})"),
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::DoublePrecision => f.write_str("double precision"),
            ColumnType::Varchar(n) => write!(f, "varchar({n})"),
            ColumnType::Char(n) => write!(f, "char({n})"),
        }
    }
}

impl ColumnType {
    /// Parse a type as written in a model's `CREATE TABLE` (common spellings accepted).
    pub fn parse(text: &str) -> Result<ColumnType, String> {
        let t = text.to_ascii_lowercase();
        let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
        let (base, args) = match t.split_once('(') {
            Some((b, a)) => {
                let a = a
                    .strip_suffix(')')
                    .ok_or_else(|| format!("type `{text}` is missing `)`"))?;
                (b.trim().to_string(), Some(a.replace(' ', "")))
            }
            None => (t.clone(), None),
        };
        let length = |what: &str| -> Result<u32, String> {
            args.as_deref()
                .and_then(|a| a.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("type `{text}` needs a length: write {what}(n)"))
        };
        let no_args = |ty: ColumnType| -> Result<ColumnType, String> {
            match &args {
                None => Ok(ty),
                Some(_) => Err(format!("type `{text}` takes no arguments")),
            }
        };
        match base.as_str() {
            "smallint" | "int2" => no_args(ColumnType::SmallInt),
            "integer" | "int" | "int4" => no_args(ColumnType::Integer),
            "bigint" | "int8" => no_args(ColumnType::BigInt),
            "boolean" | "bool" => no_args(ColumnType::Boolean),
            "date" => no_args(ColumnType::Date),
            "timestamp" | "timestamp without time zone" => no_args(ColumnType::Timestamp),
            "double precision" | "float8" => no_args(ColumnType::DoublePrecision),
            "varchar" | "character varying" => Ok(ColumnType::Varchar(length("varchar")?)),
            "char" | "character" => Ok(ColumnType::Char(length("char")?)),
            "decimal" | "numeric" => {
                let (p, s) = args
                    .as_deref()
                    .and_then(|a| a.split_once(','))
                    .and_then(|(p, s)| Some((p.parse::<u8>().ok()?, s.parse::<u8>().ok()?)))
                    .filter(|(p, s)| *p >= 1 && *p <= 38 && s <= p)
                    .ok_or_else(|| {
                        format!(
                            "type `{text}` needs a precision and scale: write decimal(p,s), p ≤ 38"
                        )
                    })?;
                Ok(ColumnType::Decimal(p, s))
            }
            _ => Err(format!(
                "type `{text}` is not one both PostgreSQL and Redshift have; use varchar(n), \
                 char(n), smallint, integer, bigint, decimal(p,s), boolean, date, timestamp or \
                 double precision"
            )),
        }
    }

    /// The type `information_schema.columns` describes (`data_type` and its length, precision
    /// and scale), if it is one of these.
    fn from_information_schema(
        data_type: &str,
        length: Option<i32>,
        precision: Option<i32>,
        scale: Option<i32>,
    ) -> Option<ColumnType> {
        Some(match data_type {
            "smallint" => ColumnType::SmallInt,
            "integer" => ColumnType::Integer,
            "bigint" => ColumnType::BigInt,
            "boolean" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp without time zone" => ColumnType::Timestamp,
            "double precision" => ColumnType::DoublePrecision,
            "character varying" => ColumnType::Varchar(u32::try_from(length?).ok()?),
            "character" => ColumnType::Char(u32::try_from(length?).ok()?),
            "numeric" => {
                ColumnType::Decimal(u8::try_from(precision?).ok()?, u8::try_from(scale?).ok()?)
            }
            _ => return None,
        })
    }

    /// Whether a `SELECT` result column of type `ty` goes into a column of this type without a
    /// narrowing or lossy conversion. Lengths cannot be described here; an over-long value fails
    /// the refresh with the column named.
    fn accepts(self, ty: &Type) -> bool {
        let int_width = |t: &Type| match *t {
            Type::INT2 => Some(2),
            Type::INT4 => Some(4),
            Type::INT8 => Some(8),
            _ => None,
        };
        let text = matches!(
            *ty,
            Type::VARCHAR | Type::BPCHAR | Type::TEXT | Type::NAME | Type::UNKNOWN
        );
        match self {
            ColumnType::SmallInt => int_width(ty).is_some_and(|w| w <= 2),
            ColumnType::Integer => int_width(ty).is_some_and(|w| w <= 4),
            ColumnType::BigInt => int_width(ty).is_some(),
            ColumnType::Decimal(..) => *ty == Type::NUMERIC || int_width(ty).is_some(),
            ColumnType::Boolean => *ty == Type::BOOL,
            ColumnType::Date => *ty == Type::DATE,
            ColumnType::Timestamp => *ty == Type::TIMESTAMP,
            ColumnType::DoublePrecision => {
                matches!(*ty, Type::FLOAT8 | Type::FLOAT4 | Type::NUMERIC)
                    || int_width(ty).is_some()
            }
            ColumnType::Varchar(_) | ColumnType::Char(_) => text,
        }
    }
}

/// One column of a reporting table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub not_null: bool,
}

/// One reporting model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The reporting table, `schema.table`, lower-case.
    pub name: String,
    /// The table group whose models directory holds the file.
    pub group: String,
    pub file: PathBuf,
    /// Replicated ODS tables read (`edfi.table`, lower-case), sorted.
    pub inputs: Vec<String>,
    /// Other models read (`schema.table`), sorted; they are refreshed first.
    pub upstream: Vec<String>,
    /// Custom datasets read, by name.
    pub custom: Vec<CustomInput>,
    pub columns: Vec<Column>,
    pub key: Vec<String>,
    /// The `SELECT` (or `WITH … SELECT`) producing the rows, in column order, without comments.
    pub select: String,
    /// `-- incremental: <column>`: the model's rows of one student depend only on that
    /// student's rows and on tables without students, and `<column>` holds the student's
    /// `edfi.student.studentuniqueid`. A flush that changed only student rows of its inputs then
    /// rebuilds only those students' rows.
    pub incremental: Option<String>,
    /// `-- on_overflow: truncate | fail`: what a value longer than its column does (in a key
    /// column, always fail).
    pub on_overflow: OnOverflow,
    /// `-- history: <column>`: the column holding a row's school year (Ed-Fi's `SchoolYear`, the
    /// year a school year ends). Rows of years before the current one (`edfi.schoolyeartype`'s
    /// `currentschoolyear`) are kept when the `SELECT` no longer produces them, as the seed's
    /// reporting database kept earlier years; rows it still produces are refreshed.
    pub history: Option<String>,
    /// `-- students_of: edfi.table: <SELECT studentusi …>` of an incremental model: the students
    /// whose rows a flush's changes of a table without students affect, found by a query over
    /// the flush's rows of it (`{changed}`) and the replicated tables. Such a change then
    /// refreshes those students only, not the whole model.
    pub students_of: Vec<(String, String)>,
    /// `-- refresh_by: <column> = <key>: edfi.table, …` of a model without students: see
    /// [`RefreshBy`].
    pub refresh_by: Option<RefreshBy>,
    /// `-- index: <column>, …`: columns of the table that a PostgreSQL target indexes, for the
    /// lookups of its `-- students_of:` queries (Redshift has no indexes).
    pub index: Vec<String>,
    /// A digest of the model's definition (name, columns, key, `SELECT`, history column) as
    /// loaded: a refresh after it changed rebuilds the model whole and keeps no rows of closed
    /// years (their keys may have changed with it).
    pub definition: String,
}

/// `-- refresh_by: <column> = <key>: edfi.table, …`: the model's rows with one value of
/// `column` depend only on the listed inputs' rows whose `key` column holds that value, and on
/// its other inputs whole. A flush that changed only listed inputs refreshes only the values its
/// changed rows carry, reading the listed inputs narrowed to them; any other change rebuilds
/// the model whole. `key` belongs in each listed input's primary key: a delete carries its key
/// only, and a changed row without a value rebuilds the model whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshBy {
    pub column: String,
    pub key: String,
    pub inputs: Vec<String>,
}

impl RefreshBy {
    fn parse(value: &str) -> Result<RefreshBy, String> {
        let hint = "write `-- refresh_by: <column> = <key>: edfi.table, …`: the model's rows \
                    with one value of <column> depend only on the listed tables' rows whose \
                    <key> holds it";
        let (pair, tables) = value
            .split_once(':')
            .ok_or_else(|| format!("`-- refresh_by:{value}`: {hint}"))?;
        let (column, key) = pair
            .split_once('=')
            .ok_or_else(|| format!("`-- refresh_by:{value}`: {hint}"))?;
        let inputs: Vec<String> = tables
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        let (column, key) = (
            column.trim().to_ascii_lowercase(),
            key.trim().to_ascii_lowercase(),
        );
        if !is_ident(&column) || !is_ident(&key) || inputs.is_empty() {
            return Err(format!("`-- refresh_by:{value}`: {hint}"));
        }
        Ok(RefreshBy {
            column,
            key,
            inputs,
        })
    }
}

/// What a model's refresh does with a value longer than its `varchar`/`char` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnOverflow {
    /// Cut it to the column (as the seed's COPY with TRUNCATECOLUMNS did), log it with model,
    /// column and key, and count it.
    #[default]
    Truncate,
    /// Stop the flush with that same message.
    Fail,
}

impl Model {
    pub fn schema(&self) -> &str {
        self.name.split_once('.').map_or("", |(s, _)| s)
    }

    /// `"schema"."table"`.
    pub fn target(&self) -> String {
        let (s, t) = self.name.split_once('.').unwrap_or(("", &self.name));
        format!("{}.{}", quote(s), quote(t))
    }

    /// `CREATE TABLE IF NOT EXISTS` for the reporting table, in the form both databases take.
    pub fn create_table_sql(&self) -> String {
        let mut lines: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                format!(
                    "    {} {}{}",
                    quote(&c.name),
                    c.ty,
                    if c.not_null { " NOT NULL" } else { "" }
                )
            })
            .collect();
        if !self.key.is_empty() {
            lines.push(format!("    PRIMARY KEY ({})", self.key_list()));
        }
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{}\n)",
            self.target(),
            lines.join(",\n")
        )
    }

    /// The condition that a row of the target is of a closed school year, for a model with
    /// `-- history:`; `alias` qualifies the column, `input` is the schema of the replicated
    /// tables. No current school year: none is closed.
    fn closed_sql(&self, alias: &str, input: &str) -> Option<String> {
        self.history.as_ref().map(|col| {
            format!(
                "{alias}{} < (SELECT MAX(schoolyear) FROM {input}.schoolyeartype WHERE currentschoolyear)",
                quote(col)
            )
        })
    }

    /// The model's columns, quoted, comma-separated, in order.
    fn column_list(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| quote(&c.name)).collect();
        cols.join(", ")
    }

    /// The key's columns, quoted, comma-separated.
    fn key_list(&self) -> String {
        let key: Vec<String> = self.key.iter().map(|k| quote(k)).collect();
        key.join(", ")
    }

    /// The rows of `a` that `b` does not hold exactly (no row of the same key, or one that
    /// differs in a column, NULL being equal to NULL), each once: what `a EXCEPT b` gives for
    /// two tables of the model's columns and key, as a join on the key (hashed, and split into
    /// batches when large) instead of a sort or hash of every column of both sides; only the
    /// few rows it finds are made distinct (a `SELECT` that yields a row twice inserts it once,
    /// as with `EXCEPT`). At 1,000,000
    /// students a flush compares about 1,100,000 refreshed rows of `studentitemscore`: 4.6 s
    /// each way with `EXCEPT`, 2.0 s with this (`docs/models.md`, "Incremental refresh").
    fn only_in(&self, a: &str, b: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("x.{}", quote(&c.name)))
            .collect();
        let mut same: Vec<String> = self
            .key
            .iter()
            .map(|k| format!("y.{k} = x.{k}", k = quote(k)))
            .collect();
        same.extend(
            self.columns
                .iter()
                .filter(|c| !self.key.contains(&c.name))
                .map(|c| {
                    let n = quote(&c.name);
                    if c.not_null {
                        format!("y.{n} = x.{n}")
                    } else {
                        format!("(y.{n} = x.{n} OR (y.{n} IS NULL AND x.{n} IS NULL))")
                    }
                }),
        );
        format!(
            "SELECT DISTINCT {} FROM {a} x WHERE NOT EXISTS (SELECT 1 FROM {b} y WHERE {})",
            cols.join(", "),
            same.join(" AND ")
        )
    }

    /// `a.k = b.k AND …` over the key: rows of `a` and `b` (tables or aliases) with one key.
    fn same_key(&self, a: &str, b: &str) -> String {
        let eq: Vec<String> = self
            .key
            .iter()
            .map(|k| format!("{a}.{k} = {b}.{k}", k = quote(k)))
            .collect();
        eq.join(" AND ")
    }

    /// The `SELECT` as a refresh runs it on the target now: a custom input that is not there
    /// is read as an empty table of its declared columns.
    pub async fn select_on(
        &self,
        client: &impl GenericClient,
    ) -> Result<String, tokio_postgres::Error> {
        let mut absent: Vec<(&str, &[Column])> = Vec::new();
        for c in &self.custom {
            if !table_exists(client, &c.name).await? {
                absent.push((&c.name, &c.columns));
            }
        }
        Ok(self.select_with_stand_ins(&absent))
    }

    /// The `SELECT` with every reference to a table of `stand_ins` (name and columns) replaced
    /// by an empty CTE of those columns and types: for upstream models whose tables do not
    /// exist yet, and custom inputs not in the target.
    fn select_with_stand_ins(&self, stand_ins: &[(&str, &[Column])]) -> String {
        self.select_with(&stand_in_ctes(stand_ins))
    }

    /// The `SELECT` with every reference to a table named in `ctes` (as the `SELECT` writes
    /// it, lower-case) replaced by a CTE of that body.
    fn select_with(&self, ctes: &[(String, String)]) -> String {
        if ctes.is_empty() {
            return self.select.clone();
        }
        // `schema__table`: a stand-in for custom.student and one for a model *.student, or a
        // CTE of the model's own named student, must not clash.
        let bare = |name: &str| name.replace('.', "__");
        let defs: Vec<String> = ctes
            .iter()
            .map(|(name, body)| format!("{} AS ({body})", quote(&bare(name))))
            .collect();
        let masked = mask(&self.select).to_ascii_lowercase();
        let mut text = String::new();
        let mut last = 0;
        for (start, end) in qualified_names(&masked) {
            if let Some((name, _)) = ctes.iter().find(|(n, _)| n == &masked[start..end]) {
                text.push_str(&self.select[last..start]);
                text.push_str(&quote(&bare(name)));
                last = end;
            }
        }
        text.push_str(&self.select[last..]);
        let trimmed = text.trim_start();
        match trimmed.get(..4) {
            Some(w)
                if w.eq_ignore_ascii_case("with")
                    && trimmed[4..].starts_with(char::is_whitespace) =>
            {
                format!("WITH {},{}", defs.join(", "), &trimmed[4..])
            }
            _ => format!("WITH {}\n{}", defs.join(", "), text),
        }
    }
}

/// What one refresh did to one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Refreshed {
    pub model: String,
    /// Rows inserted: all of them for a rebuild; for an incremental refresh those that are new
    /// or changed (`replace_rows`).
    pub rows: u64,
    pub seconds: f64,
    /// Whether only the changed students' rows were rebuilt.
    pub incremental: bool,
    /// The students whose rows an incremental refresh by student rebuilt.
    pub students: Option<u64>,
    /// Values cut to their column (`on_overflow = "truncate"`).
    pub truncated: u64,
    /// Rows of closed school years kept although the `SELECT` no longer produces them
    /// (`-- history:`).
    pub kept: u64,
}

/// A replicated table a flush changed, as a refresh sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Merged from the flush's temporary table `stage` (the last change per key, deletes with
    /// their key only, and the `edfi_cdc_op` column); `students`: it has a `studentusi` column.
    Merged { stage: String, students: bool },
    /// Replaced whole (a snapshot published), or its rows are not known.
    Replaced,
}

/// The parsed models of the enabled groups, in dependency order.
#[derive(Debug, Clone, Default)]
pub struct Models {
    models: Vec<Model>,
    /// The target is PostgreSQL (not Redshift): full rebuilds run without nested loops, and
    /// `varchar` lengths count characters (bytes on Redshift).
    postgres: bool,
    /// Models that met a value too long for its column: their refreshes check every value
    /// first (see [`overflow`]). Shared by clones; kept for the life of the process.
    checked: Arc<Mutex<HashSet<String>>>,
    /// The replicated tables keep deleted rows (`deletes = "soft"`): models read their live
    /// rows, through the views of [`LIVE_SCHEMA`].
    live: bool,
    /// Replicated tables with a `studentusi` column (`edfi.table`): an incremental refresh
    /// reads only the refreshed students' rows of them.
    student_tables: HashSet<String>,
}

/// Schema of the views of the replicated tables' live rows, with `deletes = "soft"`.
pub const LIVE_SCHEMA: &str = "edfi_live";

/// `CREATE TABLE` of the freshness table: one row per model and per replicated table, with the
/// source version and commit time its contents reflect.
pub const FRESHNESS_DDL: &str = "CREATE TABLE IF NOT EXISTS edfi_cdc.freshness (
    name varchar(255) NOT NULL,
    kind varchar(8) NOT NULL,
    source_version bigint NOT NULL,
    source_commit_time timestamp,
    refreshed_at timestamp NOT NULL,
    PRIMARY KEY (name)
)";

impl Models {
    /// Read `dir/<group>/*.sql` for each enabled group; parse headers; check inputs against the
    /// SQL and against `configured` (lower-case `edfi.table` names of the tables the connector
    /// replicates). Errors name file and reason. A group without a directory has no models.
    pub fn load(
        dir: &Path,
        groups: &[&str],
        configured: &HashSet<String>,
    ) -> Result<Models, ModelError> {
        let groups: Vec<(&str, &HashSet<String>)> =
            groups.iter().map(|g| (*g, configured)).collect();
        load_groups(dir, &groups)
    }

    /// [`Models::load`] for a connector: the models of each enabled group may read only that
    /// group's tables (lower-cased, in the group's schema).
    pub fn load_for_connector(dir: &Path, config: &ConnectorConfig) -> Result<Models, ModelError> {
        let tables: Vec<(&str, HashSet<String>)> = config
            .groups
            .iter()
            .filter(|(_, g)| g.enabled)
            .map(|(name, g)| {
                let set = g
                    .tables
                    .iter()
                    .map(|t| match t.split_once('.') {
                        Some(_) => t.to_lowercase(),
                        None => format!("{}.{}", g.schema, t).to_lowercase(),
                    })
                    .collect();
                (name.as_str(), set)
            })
            .collect();
        let groups: Vec<(&str, &HashSet<String>)> = tables.iter().map(|(g, s)| (*g, s)).collect();
        let models = load_groups(dir, &groups)?;
        let soft = config
            .sinks
            .redshift
            .as_ref()
            .is_some_and(|r| r.enabled && r.deletes == Deletes::Soft);
        Ok(if soft { models.reading_live() } else { models })
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Read the live rows of soft-deleting replicated tables: every `edfi.<table>` the models
    /// read becomes `edfi_live.<table>`, the view without the rows marked deleted.
    pub fn reading_live(mut self) -> Models {
        for m in &mut self.models {
            m.select = in_schema(&m.select, INPUT_SCHEMA, LIVE_SCHEMA);
        }
        self.live = true;
        self
    }

    /// Name the replicated tables with a `studentusi` column (`edfi.table`, lower-case): an
    /// incremental refresh then reads only the refreshed students' rows of them, so its work
    /// follows the students, not the tables.
    pub fn with_student_tables(mut self, tables: impl IntoIterator<Item = String>) -> Models {
        self.student_tables = tables.into_iter().collect();
        self
    }

    /// The schema the replicated tables are read from.
    fn input_schema(&self) -> &'static str {
        if self.live {
            LIVE_SCHEMA
        } else {
            INPUT_SCHEMA
        }
    }

    /// Refresh on PostgreSQL: model queries are planned without nested loops. Models join on
    /// several columns at once (a section is five), which PostgreSQL's estimates take for one
    /// row, and a nested loop over an aggregate or window subquery then runs it once per outer
    /// row — quadratic, minutes at 50,000 students, in full and incremental refreshes alike.
    /// Hash joins keep every refresh linear in its inputs. Redshift plans these joins itself.
    /// Lengths of `varchar` values count characters there (bytes on Redshift).
    pub fn on_postgres(mut self) -> Models {
        self.postgres = true;
        self
    }

    /// The models, in dependency order.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// Every replicated table some model reads: pass it as `changed` to build every model.
    pub fn inputs(&self) -> HashSet<String> {
        self.models
            .iter()
            .flat_map(|m| m.inputs.iter().cloned())
            .collect()
    }

    /// Create missing reporting schemas/tables and `edfi_cdc.freshness` (idempotent; existing
    /// tables are left as they are — `check` compares them).
    pub async fn install(&self, client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
        let schemas: BTreeSet<&str> = self.models.iter().map(Model::schema).collect();
        client
            .batch_execute("CREATE SCHEMA IF NOT EXISTS edfi_cdc")
            .await?;
        client.batch_execute(FRESHNESS_DDL).await?;
        client.batch_execute(MODEL_INPUTS_DDL).await?;
        for s in schemas {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(s)))
                .await?;
        }
        for m in &self.models {
            client.batch_execute(&m.create_table_sql()).await?;
            if self.postgres {
                index_lookups(client, m).await?;
            }
        }
        Ok(())
    }
}

/// On PostgreSQL, index what `m`'s refreshes look up (Redshift has no indexes; it scans the
/// column): its rows by student or key, and the columns its `-- index:` line names.
async fn index_lookups(
    client: &impl GenericClient,
    m: &Model,
) -> Result<(), tokio_postgres::Error> {
    let (_, table) = m.name.split_once('.').unwrap_or(("", &m.name));
    let own = m
        .incremental
        .iter()
        .chain(m.refresh_by.iter().map(|b| &b.column))
        .chain(&m.index);
    for column in own {
        create_index(client, m.schema(), table, column).await?;
    }
    Ok(())
}

/// `CREATE INDEX IF NOT EXISTS` on `schema.table (column)`, named by
/// [`crate::sink::names::index_name`].
async fn create_index(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
    column: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "CREATE INDEX IF NOT EXISTS {} ON {}.{} ({})",
            quote(&crate::sink::names::index_name(table, column)),
            quote(schema),
            quote(table),
            quote(column)
        ))
        .await
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
