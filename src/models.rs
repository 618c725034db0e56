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

mod overflow;

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
            let key: Vec<String> = self.key.iter().map(|k| quote(k)).collect();
            lines.push(format!("    PRIMARY KEY ({})", key.join(", ")));
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

    /// `INSERT INTO target (columns) <select>`.
    pub fn insert_sql(&self, select: &str) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| quote(&c.name)).collect();
        format!(
            "INSERT INTO {} ({})\n{}",
            self.target(),
            cols.join(", "),
            select
        )
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

    /// Compare the declared table with the target table (if it exists) and the `SELECT`'s
    /// result columns with the declared ones; tables in `stand_ins` (upstream models whose
    /// tables do not exist yet, custom inputs not in the target) are described from their
    /// declarations. Reads only. Each problem names model and column.
    async fn check_with(
        &self,
        client: &impl GenericClient,
        stand_ins: &[(&str, &[Column])],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let (schema, table) = self.name.split_once('.').unwrap_or(("", &self.name));
        match target_columns(client, schema, table).await {
            Err(e) => problems.push(format!(
                "model {}: read the target's columns: {}",
                self.name,
                pg_message(&e)
            )),
            Ok(actual) if actual.is_empty() => {}
            Ok(actual) => {
                for c in &self.columns {
                    match actual.iter().find(|a| a.0 == c.name) {
                        None => problems.push(format!(
                            "model {}: column {}: missing in the target table",
                            self.name, c.name
                        )),
                        Some((_, ty, not_null)) => {
                            match ty {
                                Ok(t) if *t == c.ty => {}
                                Ok(t) => problems.push(format!(
                                    "model {}: column {}: target type {t}, model declares {}",
                                    self.name, c.name, c.ty
                                )),
                                Err(raw) => problems.push(format!(
                                    "model {}: column {}: target type {raw}, model declares {}",
                                    self.name, c.name, c.ty
                                )),
                            }
                            if *not_null != c.not_null {
                                problems.push(format!(
                                    "model {}: column {}: target is {}, model declares {}",
                                    self.name,
                                    c.name,
                                    null_word(*not_null),
                                    null_word(c.not_null)
                                ));
                            }
                        }
                    }
                }
                for (name, _, _) in &actual {
                    if !self.columns.iter().any(|c| &c.name == name) {
                        problems.push(format!(
                            "model {}: column {name}: in the target table but not in the model",
                            self.name
                        ));
                    }
                }
                let declared: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
                let order: Vec<&str> = actual.iter().map(|a| a.0.as_str()).collect();
                if problems.is_empty() && declared != order {
                    problems.push(format!(
                        "model {}: column order: target has ({}), model declares ({})",
                        self.name,
                        order.join(", "),
                        declared.join(", ")
                    ));
                }
                match target_key(client, schema, table).await {
                    Ok(key) if key == self.key => {}
                    Ok(key) => problems.push(format!(
                        "model {}: primary key: target has ({}), model declares ({})",
                        self.name,
                        key.join(", "),
                        self.key.join(", ")
                    )),
                    Err(e) => problems.push(format!(
                        "model {}: read the target's primary key: {}",
                        self.name,
                        pg_message(&e)
                    )),
                }
            }
        }
        match client.prepare(&self.select_with_stand_ins(stand_ins)).await {
            Err(e) => problems.push(format!(
                "model {}: the SELECT does not run: {}",
                self.name,
                pg_message(&e)
            )),
            Ok(stmt) => {
                let got = stmt.columns();
                if got.len() != self.columns.len() {
                    problems.push(format!(
                        "model {}: the SELECT returns {} columns, the table has {}",
                        self.name,
                        got.len(),
                        self.columns.len()
                    ));
                }
                for (c, g) in self.columns.iter().zip(got) {
                    if g.name() != c.name {
                        problems.push(format!(
                            "model {}: column {}: the SELECT's column in its place is named {}",
                            self.name,
                            c.name,
                            g.name()
                        ));
                    }
                    if !c.ty.accepts(g.type_()) {
                        problems.push(format!(
                            "model {}: column {}: the SELECT yields {}, the table declares {} (CAST it)",
                            self.name,
                            c.name,
                            g.type_().name(),
                            c.ty
                        ));
                    }
                }
            }
        }
        problems
    }
}

fn null_word(not_null: bool) -> &'static str {
    if not_null {
        "NOT NULL"
    } else {
        "nullable"
    }
}

/// What one refresh did to one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Refreshed {
    pub model: String,
    /// Rows inserted (all of them for a rebuild, the changed students' for an incremental one).
    pub rows: u64,
    pub seconds: f64,
    /// Whether only the changed students' rows were rebuilt.
    pub incremental: bool,
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

/// Temporary table of the students a flush touched (`studentusi`, `studentuniqueid`), while
/// incremental models refresh.
const STUDENTS: &str = "edfi_cdc_changed_students";

/// Temporary table of the students one incremental model refreshes: the flush's, and those
/// its `-- students_of:` lines find for its changed inputs without students.
const MODEL_STUDENTS: &str = "edfi_cdc_model_students";

/// Temporary table of the values (`k`) of a `-- refresh_by:` model's column that one refresh
/// rebuilds.
const MODEL_KEYS: &str = "edfi_cdc_model_keys";

/// Temporary table of a history model's rows of closed school years, while it refreshes.
const KEPT: &str = "edfi_cdc_kept";

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
        }
        Ok(())
    }

    /// In the caller's transaction: rebuild every model with an input in `changed` (lower-case
    /// `edfi.table` names of target tables changed by this flush), and every model reading a
    /// refreshed model — `DELETE FROM target; INSERT INTO target (cols) <select>` — and upsert
    /// `edfi_cdc.freshness` rows for the refreshed models and for the changed tables, with
    /// `version` and `commit_time`. Returns rows and seconds per refreshed model. Atomic with the
    /// caller's transaction; may be retried after a rollback.
    pub async fn refresh(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        changed: &HashSet<String>,
        version: i64,
        commit_time: Option<DateTime<Utc>>,
    ) -> Result<Vec<Refreshed>, RefreshError> {
        let all = changed
            .iter()
            .map(|t| (t.clone(), Changed::Replaced))
            .collect();
        self.refresh_batch(tx, &all, version, commit_time).await
    }

    /// [`Models::refresh`] for a flush that knows the rows it changed: `changed` maps each
    /// changed table to how it changed. An incremental model whose changed inputs were all
    /// merged, each either with students or named by a `-- students_of:` line, is refreshed for
    /// the affected students only (and, when students were deleted, rid of rows of students
    /// that no longer exist); every other affected model is rebuilt.
    pub async fn refresh_batch(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        changed: &HashMap<String, Changed>,
        version: i64,
        commit_time: Option<DateTime<Utc>>,
    ) -> Result<Vec<Refreshed>, RefreshError> {
        let mut done: Vec<Refreshed> = Vec::new();
        // Models refreshed for more students than the flush's (`-- students_of:`): a model
        // reading one cannot follow it by the flush's students alone.
        let mut widened: HashSet<&str> = HashSet::new();
        let mut students_ready = false;
        if self.postgres {
            tx.batch_execute("SET LOCAL enable_nestloop = off").await?;
        }
        let custom = CustomState::read(tx, &self.models).await?;
        let input = self.input_schema();
        for m in &self.models {
            let inputs: Vec<&String> = m
                .inputs
                .iter()
                .filter(|i| changed.contains_key(*i))
                .collect();
            let refreshed_upstream: Vec<&Refreshed> = done
                .iter()
                .filter(|d| m.upstream.contains(&d.model))
                .collect();
            let custom_changed = custom.changed(m);
            let redefined = custom.redefined(m);
            if inputs.is_empty() && refreshed_upstream.is_empty() && !custom_changed && !redefined {
                continue;
            }
            // A model reading a model rebuilt whole is rebuilt whole; one reading models
            // refreshed for the flush's students can follow them. A changed custom input is
            // not tracked by student, and a changed definition may change every row: the model
            // is rebuilt whole.
            let upstream_full = refreshed_upstream
                .iter()
                .any(|d| !d.incremental || widened.contains(d.model.as_str()))
                || custom_changed
                || redefined;
            let stand_ins = custom.stand_ins(m);
            let started = Instant::now();
            // The changed inputs' flush rows: each merged table with students, or one a
            // `-- students_of:` line maps to students (`None`: the model is rebuilt whole).
            let mapped: Option<Vec<(&String, &String, bool)>> = inputs
                .iter()
                .map(|i| match &changed[*i] {
                    Changed::Merged {
                        stage,
                        students: true,
                    } => Some((*i, stage, true)),
                    Changed::Merged {
                        stage,
                        students: false,
                    } => m
                        .students_of
                        .iter()
                        .any(|(t, _)| t == *i)
                        .then_some((*i, stage, false)),
                    Changed::Replaced => None,
                })
                .collect();
            // A `-- refresh_by:` model whose changed inputs are all listed and merged, and that
            // reads no refreshed model, is refreshed for the values they carry.
            let keyed = match &m.refresh_by {
                Some(by) if !upstream_full && refreshed_upstream.is_empty() => {
                    let stages: Option<Vec<&String>> = inputs
                        .iter()
                        .map(|i| match &changed[*i] {
                            Changed::Merged { stage, .. } if by.inputs.contains(*i) => Some(stage),
                            _ => None,
                        })
                        .collect();
                    match stages {
                        Some(stages) => {
                            self.refresh_by_key(tx, m, by, &stages, &custom.ctes(m, &stand_ins))
                                .await?
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            let (rows, truncated, incremental) = match (keyed, &m.incremental, mapped) {
                (Some((inserted, truncated)), _, _) => {
                    // A model reading this one cannot follow it by the flush's students.
                    widened.insert(m.name.as_str());
                    (inserted, truncated, true)
                }
                (None, Some(col), Some(mapped)) if !upstream_full => {
                    if !students_ready {
                        let union: Vec<String> = changed
                            .values()
                            .filter_map(|c| match c {
                                Changed::Merged {
                                    stage,
                                    students: true,
                                } => Some(format!("SELECT studentusi FROM {stage}")),
                                _ => None,
                            })
                            .collect();
                        tx.batch_execute(&format!(
                            "CREATE TEMP TABLE {STUDENTS} (studentusi integer, studentuniqueid varchar(65535))"
                        ))
                        .await?;
                        if !union.is_empty() {
                            tx.batch_execute(&format!(
                                "INSERT INTO {STUDENTS} SELECT DISTINCT studentusi, studentuniqueid \
                                 FROM {input}.student WHERE studentusi IN ({})",
                                union.join(" UNION ")
                            ))
                            .await?;
                        }
                        students_ready = true;
                    }
                    // The model's students: the flush's, and those its mapped inputs affect.
                    let finds: Vec<String> = mapped
                        .iter()
                        .filter(|(_, _, students)| !students)
                        .flat_map(|(table, stage, _)| {
                            m.students_of.iter().filter(move |(t, _)| t == *table).map(
                                move |(_, sql)| {
                                    in_schema(&sql.replace("{changed}", stage), INPUT_SCHEMA, input)
                                },
                            )
                        })
                        .collect();
                    let set = if finds.is_empty() {
                        STUDENTS
                    } else {
                        tx.batch_execute(&format!(
                            "CREATE TEMP TABLE {MODEL_STUDENTS} AS \
                             SELECT studentusi, studentuniqueid FROM {STUDENTS} UNION \
                             SELECT s.studentusi, s.studentuniqueid FROM {input}.student s \
                             WHERE s.studentusi IN ({})",
                            finds.join(" UNION ")
                        ))
                        .await?;
                        MODEL_STUDENTS
                    };
                    // Only those students' rows of the student tables are read.
                    let mut ctes = custom.ctes(m, &stand_ins);
                    for t in m.inputs.iter().filter(|t| self.student_tables.contains(*t)) {
                        let table = t.split_once('.').map_or(t.as_str(), |(_, n)| n);
                        ctes.push((
                            format!("{input}.{table}"),
                            format!(
                                "SELECT * FROM {input}.{table} WHERE studentusi IN (SELECT studentusi FROM {set})"
                            ),
                        ));
                    }
                    // And only those students' rows of the student models it reads: they were
                    // refreshed for them (a model refreshed otherwise rebuilds this one whole).
                    for u in self.models.iter().filter(|u| m.upstream.contains(&u.name)) {
                        if let Some(ucol) = &u.incremental {
                            ctes.push((
                                u.name.clone(),
                                format!(
                                    "SELECT * FROM {} WHERE {} IN (SELECT studentuniqueid FROM {set})",
                                    u.target(),
                                    quote(ucol)
                                ),
                            ));
                        }
                    }
                    let select = m.select_with(&ctes);
                    let c = quote(col);
                    let only = format!("{c} IN (SELECT studentuniqueid FROM {set})");
                    keep_closed(tx, m, input, Some(&only)).await?;
                    tx.execute(&format!("DELETE FROM {} WHERE {only}", m.target()), &[])
                        .await?;
                    // Students deleted by the flush: their rows go from every incremental model,
                    // also one that reads them only through an upstream model.
                    let student_stage = match changed.get(&format!("{INPUT_SCHEMA}.student")) {
                        Some(Changed::Merged { stage, .. }) => Some(stage),
                        _ => None,
                    };
                    if let Some(stage) = student_stage {
                        let gone = tx
                            .query_opt(
                                &format!("SELECT 1 FROM {stage} WHERE edfi_cdc_op = 'd' LIMIT 1"),
                                &[],
                            )
                            .await?
                            .is_some();
                        if gone {
                            // A deleted student's rows of closed school years stay.
                            let open = m.closed_sql("", input).map_or(String::new(), |c| {
                                format!(" AND NOT COALESCE({c}, false)")
                            });
                            tx.execute(
                                    &format!(
                                        "DELETE FROM {} WHERE {c} NOT IN (SELECT studentuniqueid FROM {input}.student){open}",
                                        m.target()
                                    ),
                                    &[],
                                )
                                .await?;
                        }
                    }
                    let (inserted, truncated) = self
                        .insert(tx, m, &select, Some(&format!("WHERE {only}")))
                        .await?;
                    if set == MODEL_STUDENTS {
                        tx.batch_execute(&format!("DROP TABLE {MODEL_STUDENTS}"))
                            .await?;
                        widened.insert(m.name.as_str());
                    }
                    (inserted, truncated, true)
                }
                _ => {
                    let select = m.select_with(&custom.ctes(m, &stand_ins));
                    // A new definition may give the same rows other keys: keeping the closed
                    // years' old rows would duplicate them.
                    if !redefined {
                        keep_closed(tx, m, input, None).await?;
                    }
                    tx.execute(&format!("DELETE FROM {}", m.target()), &[])
                        .await?;
                    let (inserted, truncated) = self.insert(tx, m, &select, None).await?;
                    (inserted, truncated, false)
                }
            };
            let kept = if redefined {
                0
            } else {
                restore_closed(tx, m).await?
            };
            custom.record(tx, m).await?;
            done.push(Refreshed {
                model: m.name.clone(),
                rows,
                seconds: started.elapsed().as_secs_f64(),
                incremental,
                truncated,
                kept,
            });
        }
        if students_ready {
            tx.batch_execute(&format!("DROP TABLE {STUDENTS}")).await?;
        }
        if self.postgres {
            tx.batch_execute("SET LOCAL enable_nestloop = on").await?;
        }
        let mut names: Vec<(&str, &str)> =
            done.iter().map(|d| (d.model.as_str(), "model")).collect();
        let mut tables: Vec<&String> = changed.keys().collect();
        tables.sort();
        names.extend(tables.into_iter().map(|t| (t.as_str(), "table")));
        if names.is_empty() {
            return Ok(done);
        }
        let commit: Option<NaiveDateTime> = commit_time.map(|t| t.naive_utc());
        let now = Utc::now().naive_utc();
        for chunk in names.chunks(100) {
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
            let mut marks = Vec::new();
            for (name, _) in chunk {
                params.push(name);
                marks.push(format!("${}", params.len()));
            }
            tx.execute(
                &format!(
                    "DELETE FROM edfi_cdc.freshness WHERE name IN ({})",
                    marks.join(", ")
                ),
                &params,
            )
            .await?;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&version, &commit, &now];
            let mut rows = Vec::new();
            for (name, kind) in chunk {
                params.push(name);
                params.push(kind);
                rows.push(format!(
                    "(CAST(${} AS varchar(255)), CAST(${} AS varchar(8)), CAST($1 AS bigint), CAST($2 AS timestamp), CAST($3 AS timestamp))",
                    params.len() - 1,
                    params.len()
                ));
            }
            tx.execute(
                &format!(
                    "INSERT INTO edfi_cdc.freshness (name, kind, source_version, source_commit_time, refreshed_at) VALUES {}",
                    rows.join(", ")
                ),
                &params,
            )
            .await?;
        }
        Ok(done)
    }

    /// Refresh `m` (`-- refresh_by: by`) for the values of `by.key` in the flush's rows of
    /// its changed inputs (`stages`), reading its listed inputs narrowed to them: delete its
    /// rows of those values and insert them again. `None` (nothing done) when a changed row
    /// carries no value: the model is then rebuilt whole.
    async fn refresh_by_key(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        m: &Model,
        by: &RefreshBy,
        stages: &[&String],
        custom_ctes: &[(String, String)],
    ) -> Result<Option<(u64, u64)>, RefreshError> {
        let key = quote(&by.key);
        let union: Vec<String> = stages
            .iter()
            .map(|stage| format!("SELECT {key} AS k FROM {stage}"))
            .collect();
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {MODEL_KEYS} AS SELECT DISTINCT k FROM ({}) u",
            union.join(" UNION ALL ")
        ))
        .await?;
        let unknown = tx
            .query_opt(
                &format!("SELECT 1 FROM {MODEL_KEYS} WHERE k IS NULL LIMIT 1"),
                &[],
            )
            .await?
            .is_some();
        if unknown {
            tx.batch_execute(&format!("DROP TABLE {MODEL_KEYS}"))
                .await?;
            return Ok(None);
        }
        let input = self.input_schema();
        let mut ctes = custom_ctes.to_vec();
        for t in &by.inputs {
            let table = t.split_once('.').map_or(t.as_str(), |(_, n)| n);
            ctes.push((
                format!("{input}.{table}"),
                format!(
                    "SELECT * FROM {input}.{table} WHERE {key} IN (SELECT k FROM {MODEL_KEYS})"
                ),
            ));
        }
        let select = m.select_with(&ctes);
        let only = format!("{} IN (SELECT k FROM {MODEL_KEYS})", quote(&by.column));
        keep_closed(tx, m, input, Some(&only)).await?;
        tx.execute(&format!("DELETE FROM {} WHERE {only}", m.target()), &[])
            .await?;
        let done = self
            .insert(tx, m, &select, Some(&format!("WHERE {only}")))
            .await?;
        tx.batch_execute(&format!("DROP TABLE {MODEL_KEYS}"))
            .await?;
        Ok(Some(done))
    }

    /// `models check`: compare each model's `CREATE TABLE` with the target table if it exists
    /// (columns, types, nullability, key) and the `SELECT`'s result columns with the declared
    /// ones — without changing anything. Each problem names model and column.
    pub async fn check(&self, client: &impl GenericClient) -> Vec<String> {
        let mut problems = Vec::new();
        for m in &self.models {
            problems.extend(self.check_model(m, client).await);
        }
        problems
    }

    /// [`Models::check`] for one of these models.
    pub async fn check_model(&self, m: &Model, client: &impl GenericClient) -> Vec<String> {
        let mut stand_ins: Vec<(&str, &[Column])> = Vec::new();
        for u in &m.upstream {
            let Some(up) = self.models.iter().find(|x| &x.name == u) else {
                continue;
            };
            if !table_exists(client, &up.name).await.unwrap_or(true) {
                stand_ins.push((&up.name, &up.columns));
            }
        }
        for c in &m.custom {
            if !table_exists(client, &c.name).await.unwrap_or(true) {
                stand_ins.push((&c.name, &c.columns));
            }
        }
        m.check_with(client, &stand_ins).await
    }
}

/// What the custom inputs of the models look like in the target at a flush — absent, or
/// present as of the freshness row the connector carrying them last wrote — and what each
/// model saw at its last refresh (`edfi_cdc.model_inputs`, with the model's definition as the
/// input [`DEFINITION`]). A model whose custom inputs or definition look different now is
/// rebuilt; while a custom input is absent the model reads an empty stand-in.
struct CustomState {
    /// Per custom input: `None` when not in the target, else its freshness signature.
    now: HashMap<String, Option<String>>,
    /// (model, input) → the signature the model last read.
    seen: HashMap<(String, String), String>,
    /// Custom inputs that keep deleted rows (carried by a sink with `deletes = "soft"`).
    soft: HashSet<String>,
}

/// The `input` of a model's definition digest in `edfi_cdc.model_inputs`.
const DEFINITION: &str = "(definition)";

impl CustomState {
    async fn read(
        tx: &tokio_postgres::Transaction<'_>,
        models: &[Model],
    ) -> Result<CustomState, tokio_postgres::Error> {
        let mut state = CustomState {
            now: HashMap::new(),
            seen: HashMap::new(),
            soft: HashSet::new(),
        };
        let inputs: BTreeSet<&str> = models
            .iter()
            .flat_map(|m| m.custom.iter().map(|c| c.name.as_str()))
            .collect();
        for input in inputs {
            let (schema, table) = input.split_once('.').unwrap_or(("", input));
            let columns = target_columns(tx, schema, table).await?;
            let signature = if !columns.is_empty() {
                let row = tx
                    .query_opt(
                        "SELECT source_version, CAST(refreshed_at AS varchar(32)) \
                         FROM edfi_cdc.freshness WHERE name = $1",
                        &[&input],
                    )
                    .await?;
                // Present without a connector's freshness row: loaded by other means, and its
                // changes are not seen.
                Some(row.map_or("present".to_string(), |r| {
                    format!("{}@{}", r.get::<_, i64>(0), r.get::<_, String>(1))
                }))
            } else {
                None
            };
            if columns.iter().any(|(name, _, _)| name == DELETED_AT) {
                state.soft.insert(input.to_string());
            }
            state.now.insert(input.to_string(), signature);
        }
        for r in tx
            .query(
                "SELECT CAST(model AS varchar(255)), CAST(input AS varchar(255)), \
                 CAST(seen AS varchar(255)) FROM edfi_cdc.model_inputs",
                &[],
            )
            .await?
        {
            state.seen.insert((r.get(0), r.get(1)), r.get(2));
        }
        Ok(state)
    }

    fn signature(&self, input: &str) -> &str {
        self.now
            .get(input)
            .and_then(|s| s.as_deref())
            .unwrap_or("absent")
    }

    /// Whether a custom input of `m` changed since `m` last read it.
    fn changed(&self, m: &Model) -> bool {
        m.custom.iter().any(|c| {
            self.seen
                .get(&(m.name.clone(), c.name.clone()))
                .map(String::as_str)
                != Some(self.signature(&c.name))
        })
    }

    /// The CTEs `m`'s `SELECT` reads its custom inputs through: empty stand-ins for those not
    /// in the target (`stand_ins`), the live rows of those that keep deleted rows.
    fn ctes(&self, m: &Model, stand_ins: &[(&str, &[Column])]) -> Vec<(String, String)> {
        let mut ctes = stand_in_ctes(stand_ins);
        for c in m.custom.iter().filter(|c| self.soft.contains(&c.name)) {
            ctes.push((
                c.name.clone(),
                format!("SELECT * FROM {} WHERE {DELETED_AT} IS NULL", c.name),
            ));
        }
        ctes
    }

    /// Whether `m`'s definition differs from the one of its last refresh (or it has none).
    fn redefined(&self, m: &Model) -> bool {
        self.seen
            .get(&(m.name.clone(), DEFINITION.to_string()))
            .map(String::as_str)
            != Some(m.definition.as_str())
    }

    /// The custom inputs of `m` not in the target, as stand-ins.
    fn stand_ins<'m>(&self, m: &'m Model) -> Vec<(&'m str, &'m [Column])> {
        m.custom
            .iter()
            .filter(|c| self.now.get(&c.name).is_some_and(Option::is_none))
            .map(|c| (c.name.as_str(), c.columns.as_slice()))
            .collect()
    }

    /// `m` has been refreshed by its definition and from its custom inputs as they are now.
    async fn record(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        m: &Model,
    ) -> Result<(), tokio_postgres::Error> {
        if !self.redefined(m) && !self.changed(m) {
            return Ok(());
        }
        tx.execute(
            "DELETE FROM edfi_cdc.model_inputs WHERE model = $1",
            &[&m.name],
        )
        .await?;
        let seen = std::iter::once((DEFINITION, m.definition.as_str())).chain(
            m.custom
                .iter()
                .map(|c| (c.name.as_str(), self.signature(&c.name))),
        );
        for (input, signature) in seen {
            tx.execute(
                "INSERT INTO edfi_cdc.model_inputs (model, input, seen) \
                 VALUES (CAST($1 AS varchar(255)), CAST($2 AS varchar(255)), CAST($3 AS varchar(255)))",
                &[&m.name, &input, &signature],
            )
            .await?;
        }
        Ok(())
    }
}

type TargetColumn = (String, Result<ColumnType, String>, bool);

/// Empty CTEs of the declared columns and types, named by the tables they stand in for.
fn stand_in_ctes(stand_ins: &[(&str, &[Column])]) -> Vec<(String, String)> {
    stand_ins
        .iter()
        .map(|(name, columns)| {
            let cols: Vec<String> = columns
                .iter()
                .map(|c| format!("CAST(NULL AS {}) AS {}", c.ty, quote(&c.name)))
                .collect();
            (
                name.to_string(),
                format!("SELECT {} WHERE 1 = 0", cols.join(", ")),
            )
        })
        .collect()
}

/// For a model with `-- history:`: copy its rows of closed school years (those of `only`, a
/// condition on the target's columns, if given) aside before its rows are deleted.
async fn keep_closed(
    tx: &tokio_postgres::Transaction<'_>,
    m: &Model,
    input: &str,
    only: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let Some(closed) = m.closed_sql("t.", input) else {
        return Ok(());
    };
    let only = only.map_or(String::new(), |o| format!(" AND t.{o}"));
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {KEPT} AS SELECT * FROM {} t WHERE {closed}{only}",
        m.target()
    ))
    .await
}

/// Put back the rows [`keep_closed`] set aside that the `SELECT` did not produce again (by key);
/// returns how many.
async fn restore_closed(
    tx: &tokio_postgres::Transaction<'_>,
    m: &Model,
) -> Result<u64, tokio_postgres::Error> {
    if m.history.is_none() {
        return Ok(0);
    }
    let cols: Vec<String> = m.columns.iter().map(|c| quote(&c.name)).collect();
    let same_key: Vec<String> = m
        .key
        .iter()
        .map(|k| format!("t.{k} = k.{k}", k = quote(k)))
        .collect();
    let n = tx
        .execute(
            &format!(
                "INSERT INTO {target} ({cols}) SELECT {cols} FROM {KEPT} k \
                 WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {same})",
                target = m.target(),
                cols = cols.join(", "),
                same = same_key.join(" AND "),
            ),
            &[],
        )
        .await?;
    tx.batch_execute(&format!("DROP TABLE {KEPT}")).await?;
    Ok(n)
}

/// Whether the target's table `schema.table` has the column `column`.
pub async fn has_column(
    client: &impl GenericClient,
    name: &str,
    column: &str,
) -> Result<bool, tokio_postgres::Error> {
    let (schema, table) = name.split_once('.').unwrap_or(("", name));
    Ok(client
        .query_opt(
            "SELECT 1 FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
            &[&schema, &table, &column],
        )
        .await?
        .is_some())
}

/// Whether the target has the table `schema.table`.
pub async fn table_exists(
    client: &impl GenericClient,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    let (schema, table) = name.split_once('.').unwrap_or(("", name));
    Ok(!target_columns(client, schema, table).await?.is_empty())
}

async fn target_columns(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Vec<TargetColumn>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT CAST(column_name AS varchar(128)), CAST(data_type AS varchar(128)), \
             CAST(character_maximum_length AS integer), CAST(numeric_precision AS integer), \
             CAST(numeric_scale AS integer), CAST(is_nullable AS varchar(3)) \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 \
             ORDER BY ordinal_position",
            &[&schema, &table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let data_type: String = r.get(1);
            let ty = ColumnType::from_information_schema(&data_type, r.get(2), r.get(3), r.get(4))
                .ok_or(data_type);
            (r.get(0), ty, r.get::<_, String>(5) == "NO")
        })
        .collect())
}

async fn target_key(
    client: &impl GenericClient,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT CAST(k.column_name AS varchar(128)) FROM information_schema.table_constraints c \
             JOIN information_schema.key_column_usage k ON k.constraint_schema = c.constraint_schema \
             AND k.constraint_name = c.constraint_name AND k.table_name = c.table_name \
             WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = $1 AND c.table_name = $2 \
             ORDER BY k.ordinal_position",
            &[&schema, &table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn load_groups(dir: &Path, groups: &[(&str, &HashSet<String>)]) -> Result<Models, ModelError> {
    let mut problems = Vec::new();
    let mut parsed: Vec<Model> = Vec::new();
    for (group, _) in groups {
        let gdir = dir.join(group);
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&gdir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(ModelProblem {
                    file: gdir.clone(),
                    reason: format!("cannot read the directory: {e}"),
                });
                continue;
            }
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect(),
        };
        files.sort();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(ModelProblem {
                        file,
                        reason: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            match parse_model(group, &file, &text) {
                Ok(m) => parsed.push(m),
                Err(reasons) => problems.extend(reasons.into_iter().map(|reason| ModelProblem {
                    file: file.clone(),
                    reason,
                })),
            }
        }
    }
    // References: every `edfi.table`, and every other model's name, found in the SELECT.
    let names: BTreeMap<String, PathBuf> = {
        let mut names = BTreeMap::new();
        for m in &parsed {
            if let Some(first) = names.insert(m.name.clone(), m.file.clone()) {
                problems.push(ModelProblem {
                    file: m.file.clone(),
                    reason: format!("model {} is also defined by {}", m.name, first.display()),
                });
            }
        }
        names
    };
    for m in &mut parsed {
        let configured = groups
            .iter()
            .find(|(g, _)| *g == m.group)
            .map(|(_, c)| *c)
            .expect("a parsed model's group was loaded");
        let declared = std::mem::take(&mut m.inputs);
        let refs = references(&mask(&m.select).to_ascii_lowercase());
        let mut found_inputs = BTreeSet::new();
        let mut found_models = BTreeSet::new();
        let mut found_custom = BTreeSet::new();
        for r in refs {
            if r.starts_with(&format!("{INPUT_SCHEMA}.")) {
                found_inputs.insert(r);
            } else if r.starts_with(&format!("{CUSTOM_SCHEMA}.")) {
                found_custom.insert(r);
            } else if names.contains_key(&r) && r != m.name {
                found_models.insert(r);
            }
        }
        let declared_custom: BTreeSet<String> = m.custom.iter().map(|c| c.name.clone()).collect();
        for r in found_custom.difference(&declared_custom) {
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason: format!(
                    "model {}: reads {r} without a `-- custom: {r} (column type, …)` line naming the columns it reads",
                    m.name
                ),
            });
        }
        for r in declared_custom.difference(&found_custom) {
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason: format!(
                    "model {}: `-- custom: {r}` is declared but not read",
                    m.name
                ),
            });
        }
        let declared_set: BTreeSet<String> = declared.iter().cloned().collect();
        let derived: BTreeSet<String> = found_inputs.union(&found_models).cloned().collect();
        let undeclared: Vec<&String> = derived.difference(&declared_set).collect();
        let unused: Vec<&String> = declared_set.difference(&derived).collect();
        if !undeclared.is_empty() || !unused.is_empty() {
            let mut reason = format!("model {}: `-- inputs:` does not match the SELECT:", m.name);
            if !undeclared.is_empty() {
                reason.push_str(&format!(
                    " read but not declared: {};",
                    join(undeclared.iter().map(|s| s.as_str()))
                ));
            }
            if !unused.is_empty() {
                reason.push_str(&format!(
                    " declared but not read: {};",
                    join(unused.iter().map(|s| s.as_str()))
                ));
            }
            reason.pop();
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason,
            });
        }
        let missing: Vec<&String> = found_inputs
            .iter()
            .filter(|i| !configured.contains(*i))
            .collect();
        if !missing.is_empty() {
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason: format!(
                    "model {}: input(s) {} are not replicated tables of group {}: add them to the \
                     group's `tables` in the connector file",
                    m.name,
                    join(missing.iter().map(|s| s.as_str())),
                    m.group
                ),
            });
        }
        for (table, sql) in &m.students_of {
            let read = references(&mask(sql).to_ascii_lowercase());
            let unknown: Vec<&String> = read
                .iter()
                .filter(|r| r.starts_with(&format!("{INPUT_SCHEMA}.")) && !configured.contains(*r))
                .collect();
            let reason = if m.incremental.is_none() {
                Some(
                    "only an incremental model (`-- incremental:`) maps changes to students"
                        .to_string(),
                )
            } else if !found_inputs.contains(table) {
                Some(format!("{table} is not an input of the model"))
            } else if !unknown.is_empty() {
                Some(format!(
                    "reads {}, not replicated tables of group {}",
                    join(unknown.iter().map(|s| s.as_str())),
                    m.group
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                problems.push(ModelProblem {
                    file: m.file.clone(),
                    reason: format!("model {}: `-- students_of: {table}`: {reason}", m.name),
                });
            }
        }
        if let Some(by) = &m.refresh_by {
            let unread: Vec<&String> = by
                .inputs
                .iter()
                .filter(|t| !found_inputs.contains(*t))
                .collect();
            if !unread.is_empty() {
                problems.push(ModelProblem {
                    file: m.file.clone(),
                    reason: format!(
                        "model {}: `-- refresh_by:` lists {}, not input(s) of the model",
                        m.name,
                        join(unread.iter().map(|s| s.as_str()))
                    ),
                });
            }
        }
        let years = format!("{INPUT_SCHEMA}.schoolyeartype");
        if m.history.is_some() && !configured.contains(&years) {
            problems.push(ModelProblem {
                file: m.file.clone(),
                reason: format!(
                    "model {}: `-- history:` reads the current school year from {years}, which is \
                     not a replicated table of group {}: add SchoolYearType to the group's `tables` \
                     in the connector file",
                    m.name, m.group
                ),
            });
        }
        m.inputs = found_inputs.into_iter().collect();
        m.upstream = found_models.into_iter().collect();
    }
    let models = match order(parsed) {
        Ok(models) => models,
        Err(cycle) => {
            problems.extend(cycle);
            Vec::new()
        }
    };
    if problems.is_empty() {
        Ok(Models {
            models,
            postgres: false,
            checked: Arc::default(),
            live: false,
            student_tables: HashSet::new(),
        })
    } else {
        Err(ModelError(problems))
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Dependency order: a model after every model it reads; ties by name. A cycle is a problem of
/// each file on it.
fn order(mut pending: Vec<Model>) -> Result<Vec<Model>, Vec<ModelProblem>> {
    pending.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<Model> = Vec::new();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|m| m.upstream.iter().all(|u| out.iter().any(|o| &o.name == u)));
        match ready {
            Some(i) => out.push(pending.remove(i)),
            None => {
                return Err(pending
                    .iter()
                    .map(|m| ModelProblem {
                        file: m.file.clone(),
                        reason: format!(
                            "model {} is on a dependency cycle (reads {})",
                            m.name,
                            m.upstream.join(", ")
                        ),
                    })
                    .collect())
            }
        }
    }
    Ok(out)
}

/// Parse one model file. `inputs` holds the declared inputs until they are checked.
fn parse_model(group: &str, file: &Path, text: &str) -> Result<Model, Vec<String>> {
    let mut problems = Vec::new();
    let mut name: Option<String> = None;
    let mut declared: Vec<String> = Vec::new();
    let mut saw_inputs = false;
    let mut incremental: Option<String> = None;
    let mut history: Option<String> = None;
    let mut students_of: Vec<(String, String)> = Vec::new();
    let mut refresh_by: Option<RefreshBy> = None;
    let mut on_overflow = OnOverflow::default();
    let mut custom: Vec<CustomInput> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("--") else {
            break;
        };
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        match key.trim() {
            "model" => name = Some(value.trim().to_ascii_lowercase()),
            "incremental" => incremental = Some(value.trim().to_ascii_lowercase()),
            "history" => history = Some(value.trim().to_ascii_lowercase()),
            "students_of" => match value.split_once(':') {
                Some((table, sql)) if sql.contains("{changed}") => {
                    students_of.push((table.trim().to_ascii_lowercase(), sql.trim().to_string()))
                }
                _ => problems.push(format!(
                    "`-- students_of:{value}`: write `-- students_of: edfi.table: SELECT studentusi \
                     … {{changed}} …`, where {{changed}} is the flush's rows of the table"
                )),
            },
            "refresh_by" => match RefreshBy::parse(value) {
                Ok(by) => refresh_by = Some(by),
                Err(e) => problems.push(e),
            },
            "on_overflow" => match value.trim().to_ascii_lowercase().as_str() {
                "truncate" => on_overflow = OnOverflow::Truncate,
                "fail" => on_overflow = OnOverflow::Fail,
                other => problems.push(format!(
                    "`-- on_overflow: {other}`: write `truncate` or `fail`"
                )),
            },
            "custom" => match parse_custom(value) {
                Ok(c) => custom.push(c),
                Err(e) => problems.push(e),
            },
            "inputs" => {
                saw_inputs = true;
                declared.extend(
                    value
                        .split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty()),
                );
            }
            _ => {}
        }
    }
    if name.is_none() {
        problems.push("missing the `-- model: schema.table` header line".to_string());
    }
    if !saw_inputs {
        problems.push("missing the `-- inputs: edfi.table, …` header line".to_string());
    }
    let clean = strip_comments(text);
    let masked = mask(&clean);
    let lower = masked.to_ascii_lowercase();
    let tokens = tokens(&lower);
    for (construct, hint) in NOT_PORTABLE {
        let pattern: Vec<&str> = construct.split(' ').collect();
        if tokens
            .windows(pattern.len())
            .any(|w| w == pattern.as_slice())
        {
            problems.push(format!(
                "`{}` is not valid on both PostgreSQL and Redshift: {hint}",
                construct.replace(' ', "")
            ));
        }
    }
    let mut statements = Vec::new();
    let mut start = 0;
    for (i, ch) in masked.char_indices() {
        if ch == ';' {
            statements.push(clean[start..i].trim());
            start = i + 1;
        }
    }
    statements.push(clean[start..].trim());
    statements.retain(|s| !s.is_empty());
    if statements.len() != 2 {
        problems.push(format!(
            "expected two statements, `CREATE TABLE …;` then `SELECT …;`, found {}",
            statements.len()
        ));
        return Err(problems);
    }
    let table = match parse_create_table(statements[0]) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let select = statements[1].to_string();
    let first_word = select
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if first_word != "select" && first_word != "with" {
        problems.push("the second statement must be a SELECT (or WITH … SELECT)".to_string());
    }
    if let (Some(n), Some((t, _, _))) = (&name, &table) {
        if n != t {
            problems.push(format!(
                "the header names model {n} but the CREATE TABLE creates {t}"
            ));
        }
    }
    if let Some(n) = &name {
        if n.split('.').count() != 2 || n.starts_with(&format!("{INPUT_SCHEMA}.")) {
            problems.push(format!(
                "model name {n} must be schema.table in a reporting schema (not {INPUT_SCHEMA})"
            ));
        }
    }
    if let (Some(col), Some((_, columns, _))) = (&incremental, &table) {
        if !columns.iter().any(|c| &c.name == col) {
            problems.push(format!(
                "`-- incremental: {col}` names no column of the table"
            ));
        }
    }
    if let (Some(by), Some((_, columns, _))) = (&refresh_by, &table) {
        if incremental.is_some() {
            problems.push(
                "`-- refresh_by:` and `-- incremental:` exclude each other: a model is refreshed \
                 by student or by another key"
                    .to_string(),
            );
        }
        if !columns.iter().any(|c| c.name == by.column) {
            problems.push(format!(
                "`-- refresh_by: {} = …` names no column of the table",
                by.column
            ));
        }
    }
    if let (Some(col), Some((_, columns, _))) = (&history, &table) {
        match columns.iter().find(|c| &c.name == col) {
            None => problems.push(format!("`-- history: {col}` names no column of the table")),
            Some(c)
                if !matches!(
                    c.ty,
                    ColumnType::SmallInt | ColumnType::Integer | ColumnType::BigInt
                ) =>
            {
                problems.push(format!(
                    "`-- history: {col}`: the column is {}, not the school year as a number \
                     (smallint, integer or bigint)",
                    c.ty
                ))
            }
            Some(_) => {}
        }
    }
    match (problems.is_empty(), name, table) {
        (true, Some(name), Some((_, columns, key))) => Ok(Model {
            definition: definition_digest(&name, &columns, &key, &select, history.as_deref()),
            name,
            group: group.to_string(),
            file: file.to_path_buf(),
            inputs: declared,
            upstream: Vec::new(),
            custom,
            columns,
            key,
            select,
            incremental,
            on_overflow,
            history,
            students_of,
            refresh_by,
        }),
        _ => Err(problems),
    }
}

/// [`Model::definition`].
fn definition_digest(
    name: &str,
    columns: &[Column],
    key: &[String],
    select: &str,
    history: Option<&str>,
) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {} {}", c.name, c.ty, c.not_null))
        .collect();
    // Layout is not definition: whitespace and line endings do not count.
    let select = select.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = format!(
        "{name}\n{}\n{}\n{select}\n{}",
        cols.join(","),
        key.join(","),
        history.unwrap_or("")
    );
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// `custom.table (column type, …)` of a `-- custom:` header line.
fn parse_custom(value: &str) -> Result<CustomInput, String> {
    let value = value.trim();
    let bad = || {
        format!("cannot read `-- custom: {value}`: write `-- custom: {CUSTOM_SCHEMA}.table (column type, …)`")
    };
    let open = value.find('(').ok_or_else(bad)?;
    let close = value
        .rfind(')')
        .filter(|&c| c > open && value[c + 1..].trim().is_empty())
        .ok_or_else(bad)?;
    let name = value[..open].trim().to_ascii_lowercase();
    if !matches!(name.split_once('.'), Some((s, t)) if s == CUSTOM_SCHEMA && is_ident(t)) {
        return Err(format!(
            "custom input `{name}` must be a table of schema {CUSTOM_SCHEMA}"
        ));
    }
    let mut columns: Vec<Column> = Vec::new();
    for item in split_top_level(&value[open + 1..close]) {
        let lower = item.trim().to_ascii_lowercase();
        let (col, ty) = lower.split_once(char::is_whitespace).ok_or_else(bad)?;
        if !is_ident(col) || columns.iter().any(|c| c.name == col) {
            return Err(format!(
                "custom input {name}: column `{col}` is not a new lower-case identifier"
            ));
        }
        let ty = ColumnType::parse(ty.trim())
            .map_err(|e| format!("custom input {name}: column {col}: {e}"))?;
        columns.push(Column {
            name: col.to_string(),
            ty,
            not_null: false,
        });
    }
    if columns.is_empty() {
        return Err(bad());
    }
    Ok(CustomInput { name, columns })
}

/// Constructs one of the two databases lacks, with what to write instead.
/// Patterns are token sequences separated by single spaces (see [`tokens`]).
const NOT_PORTABLE: [(&str, &str); 6] = [
    (": :", "write CAST(x AS type)"),
    ("distinct on", "use ROW_NUMBER() OVER (PARTITION BY …) = 1"),
    ("filter (", "use an aggregate over CASE WHEN … END"),
    ("lateral", "join a derived table"),
    ("generate_series", "join a table of numbers or dates"),
    ("ilike", "compare LOWER(x) with LIKE"),
];

/// `CREATE TABLE schema.table (col type [NOT NULL], …, PRIMARY KEY (a, b))`.
fn parse_create_table(stmt: &str) -> Result<(String, Vec<Column>, Vec<String>), String> {
    let lower = stmt.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().take(2).collect();
    if words != ["create", "table"] {
        return Err("the first statement must be `CREATE TABLE schema.table (…)`".into());
    }
    let open = stmt.find('(').ok_or("CREATE TABLE without a column list")?;
    let close = stmt
        .rfind(')')
        .filter(|c| *c > open)
        .ok_or("CREATE TABLE without a closing `)`")?;
    if !stmt[close + 1..].trim().is_empty() {
        return Err(format!(
            "unexpected text after the CREATE TABLE column list: `{}` (table options differ between PostgreSQL and Redshift)",
            stmt[close + 1..].trim()
        ));
    }
    let head = lower[..open].split_whitespace().collect::<Vec<_>>();
    let table = match head.as_slice() {
        ["create", "table", name] => name.to_string(),
        _ => return Err("write `CREATE TABLE schema.table (` on the first line".into()),
    };
    let mut columns: Vec<Column> = Vec::new();
    let mut key: Option<Vec<String>> = None;
    let mut problems = Vec::new();
    for item in split_top_level(&stmt[open + 1..close]) {
        let item = item.trim();
        let lower = item.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("primary key") {
            let cols = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .map(|r| {
                    r.split(',')
                        .map(|c| c.trim().to_string())
                        .collect::<Vec<_>>()
                });
            match cols {
                Some(c) if c.iter().all(|c| is_ident(c)) => key = Some(c),
                _ => problems.push(format!("cannot read `{item}`: write PRIMARY KEY (a, b)")),
            }
            continue;
        }
        let Some((name, rest)) = lower.split_once(char::is_whitespace) else {
            problems.push(format!(
                "cannot read column `{item}`: write `name type [NOT NULL]`"
            ));
            continue;
        };
        if !is_ident(name) {
            problems.push(format!(
                "column name `{name}` must be a lower-case identifier (letters, digits, _)"
            ));
            continue;
        }
        let rest = rest.trim();
        let (ty, not_null) = if let Some(t) = rest.strip_suffix("not null") {
            (t.trim(), true)
        } else if let Some(t) = rest.strip_suffix(" null") {
            (t.trim(), false)
        } else {
            (rest, false)
        };
        if ty.contains("primary key") || ty.contains("default") || ty.contains("references") {
            problems.push(format!(
                "column {name}: only `name type [NOT NULL]` is allowed; declare the key as a PRIMARY KEY (…) line"
            ));
            continue;
        }
        match ColumnType::parse(ty) {
            Ok(ty) => {
                if columns.iter().any(|c| c.name == name) {
                    problems.push(format!("column {name} is declared twice"));
                }
                columns.push(Column {
                    name: name.to_string(),
                    ty,
                    not_null,
                });
            }
            Err(e) => problems.push(format!("column {name}: {e}")),
        }
    }
    let key = key.unwrap_or_default();
    if key.is_empty() {
        problems.push(format!("table {table} has no PRIMARY KEY (…) line"));
    }
    for k in &key {
        match columns.iter().find(|c| &c.name == k) {
            None => problems.push(format!("primary key column {k} is not a column of {table}")),
            Some(c) if !c.not_null => {
                problems.push(format!("primary key column {k} must be declared NOT NULL"))
            }
            Some(_) => {}
        }
    }
    if columns.is_empty() {
        problems.push(format!("table {table} has no columns"));
    }
    if problems.is_empty() {
        Ok((table, columns, key))
    } else {
        Err(problems.join("; "))
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Split at commas outside parentheses.
fn split_top_level(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, ch) in body.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&body[start..]);
    out.retain(|s| !s.trim().is_empty());
    out
}

/// The text with `-- …` comments replaced by spaces (string literals kept), same byte offsets.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut in_comment = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
                out.push(c);
            } else {
                out.extend(std::iter::repeat_n(' ', c.len_utf8()));
            }
            continue;
        }
        if !in_string && c == '-' && chars.peek() == Some(&'-') {
            in_comment = true;
            out.push(' ');
            continue;
        }
        if c == '\'' {
            in_string = !in_string;
        }
        out.push(c);
    }
    out
}

/// The text (already without comments) with the contents of string literals replaced by
/// spaces, same byte offsets: what is left is SQL structure only.
fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    for c in text.chars() {
        if c == '\'' {
            in_string = !in_string;
            out.push(c);
        } else if in_string {
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    out
}

/// Words (identifiers, keywords, numbers) and single punctuation characters of masked SQL.
fn tokens(masked: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut word: Option<usize> = None;
    for (i, c) in masked.char_indices() {
        let in_word = c.is_ascii_alphanumeric() || c == '_';
        match (in_word, word) {
            (true, None) => word = Some(i),
            (false, Some(start)) => {
                out.push(&masked[start..i]);
                word = None;
            }
            _ => {}
        }
        if !in_word && !c.is_whitespace() {
            out.push(&masked[i..i + c.len_utf8()]);
        }
    }
    if let Some(start) = word {
        out.push(&masked[start..]);
    }
    out
}

/// Every `name.name` in masked, lower-cased SQL whose first part starts with a letter or `_`
/// (qualified table names, and alias-qualified columns, which callers filter out).
fn references(masked: &str) -> BTreeSet<String> {
    qualified_names(masked)
        .into_iter()
        .map(|(start, end)| masked[start..end].to_string())
        .collect()
}

/// Byte ranges of the `name.name` tokens of masked SQL (see [`references`]).
/// `sql` with the schema of every `from.table` reference made `to` (comments and string
/// literals left alone).
fn in_schema(sql: &str, from: &str, to: &str) -> String {
    let masked = mask(sql).to_ascii_lowercase();
    let mut out = String::new();
    let mut last = 0;
    for (start, end) in qualified_names(&masked) {
        if masked[start..end].split_once('.').map(|(s, _)| s) == Some(from) {
            out.push_str(&sql[last..start]);
            out.push_str(to);
            last = start + from.len();
        }
    }
    out.push_str(&sql[last..]);
    out
}

fn qualified_names(masked: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = masked.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b'.') {
            i += 1;
        }
        let token = &masked[start..i];
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() == 2
            && !parts[0].is_empty()
            && !parts[1].is_empty()
            && parts[0].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            out.push((start, i));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn write(dir: &Path, group: &str, file: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir.join(group)).unwrap();
        let p = dir.join(group).join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("edfi-cdc-models-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        d
    }

    const GOOD: &str = "-- model: roster.thing
-- inputs: edfi.student,
-- inputs: edfi.school
CREATE TABLE roster.thing (
    studentnumber varchar(32) NOT NULL,
    amount decimal(9, 3),
    schoolid integer NOT NULL, -- a comment; with a semicolon
    PRIMARY KEY (studentnumber, schoolid)
);
SELECT CAST(s.studentuniqueid AS varchar(32)) AS studentnumber,
       CAST(NULL AS decimal(9,3)) AS amount,
       sc.schoolid AS schoolid -- edfi.not_a_reference
FROM edfi.student s CROSS JOIN edfi.school sc WHERE s.firstname <> 'edfi.x; --'
";

    #[test]
    fn parses_a_model_and_derives_its_inputs() {
        let dir = tempdir("good");
        write(&dir, "ic", "thing.sql", GOOD);
        let models = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"])).unwrap();
        let m = &models.models()[0];
        assert_eq!(m.name, "roster.thing");
        assert_eq!(m.inputs, ["edfi.school", "edfi.student"]);
        assert_eq!(m.key, ["studentnumber", "schoolid"]);
        assert_eq!(m.columns[1].ty, ColumnType::Decimal(9, 3));
        assert!(!m.columns[1].not_null);
        assert!(m.select.starts_with("SELECT"), "{}", m.select);
        assert!(!m.select.contains("not_a_reference"));
        assert!(models.inputs().contains("edfi.student"));
        assert!(m.create_table_sql().contains("\"amount\" decimal(9,3),"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn inputs_that_differ_from_the_select_are_an_error_naming_the_file() {
        let dir = tempdir("mismatch");
        let text = GOOD.replace("-- inputs: edfi.school", "-- inputs: edfi.calendar");
        let file = write(&dir, "ic", "thing.sql", &text);
        let all = set(&["edfi.student", "edfi.school", "edfi.calendar"]);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("read but not declared: edfi.school"), "{msg}");
        assert!(
            msg.contains("declared but not read: edfi.calendar"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn custom_inputs_are_declared_with_their_columns_and_stand_in_when_absent() {
        let dir = tempdir("custom");
        let text = GOOD
            .replace(
                "-- inputs: edfi.school\n",
                "-- inputs: edfi.school\n-- custom: custom.extra (studentnumber varchar(32), amount decimal(9, 3))\n",
            )
            .replace(
                "CAST(NULL AS decimal(9,3)) AS amount",
                "x.amount AS amount",
            )
            .replace(
                "CROSS JOIN edfi.school sc",
                "CROSS JOIN edfi.school sc LEFT JOIN custom.extra x ON x.studentnumber = s.studentuniqueid",
            );
        write(&dir, "ic", "thing.sql", &text);
        let all = set(&["edfi.student", "edfi.school"]);
        let models = Models::load(&dir, &["ic"], &all).unwrap();
        let m = &models.models()[0];
        assert_eq!(m.custom.len(), 1);
        assert_eq!(m.custom[0].name, "custom.extra");
        assert_eq!(m.custom[0].columns[1].ty.to_string(), "decimal(9,3)");
        assert_eq!(
            m.inputs,
            ["edfi.school", "edfi.student"],
            "custom inputs are not replicated ones"
        );
        let c = &m.custom[0];
        let sql = m.select_with_stand_ins(&[(&c.name, &c.columns)]);
        assert!(
            sql.starts_with(
                "WITH \"custom__extra\" AS (SELECT CAST(NULL AS varchar(32)) AS \"studentnumber\""
            ),
            "{sql}"
        );
        assert!(sql.contains("LEFT JOIN \"custom__extra\" x"), "{sql}");

        let undeclared = text.replace(
            "-- custom: custom.extra (studentnumber varchar(32), amount decimal(9, 3))\n",
            "",
        );
        write(&dir, "ic", "thing.sql", &undeclared);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
        assert!(
            err.contains(
                "reads custom.extra without a `-- custom: custom.extra (column type, …)` line"
            ),
            "{err}"
        );
        let unread = GOOD.replace(
            "-- inputs: edfi.school\n",
            "-- inputs: edfi.school\n-- custom: custom.extra (a integer)\n",
        );
        write(&dir, "ic", "thing.sql", &unread);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
        assert!(
            err.contains("`-- custom: custom.extra` is declared but not read"),
            "{err}"
        );
        let elsewhere = GOOD.replace(
            "-- inputs: edfi.school\n",
            "-- inputs: edfi.school\n-- custom: edfi.extra (a integer)\n",
        );
        write(&dir, "ic", "thing.sql", &elsewhere);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
        assert!(
            err.contains("custom input `edfi.extra` must be a table of schema custom"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn inputs_must_be_replicated_tables_of_the_group() {
        let dir = tempdir("unconfigured");
        let file = write(&dir, "ic", "thing.sql", GOOD);
        let err = Models::load(&dir, &["ic"], &set(&["edfi.student"])).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].file, file);
        assert!(err.0[0].reason.contains("edfi.school"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn only_enabled_groups_are_read() {
        let dir = tempdir("groups");
        write(&dir, "ic", "thing.sql", GOOD);
        write(&dir, "illuminate", "broken.sql", "SELECT 1;");
        let models = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"])).unwrap();
        assert_eq!(models.models().len(), 1);
        let none = Models::load(&dir, &["absent"], &HashSet::new()).unwrap();
        assert!(none.is_empty());
        assert!(Models::load(&dir, &["illuminate"], &HashSet::new()).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn models_reading_models_come_after_them_and_cycles_are_errors() {
        let dir = tempdir("order");
        write(&dir, "ic", "b.sql", GOOD);
        write(
            &dir,
            "ic",
            "a.sql",
            "-- model: roster.athing\n-- inputs: roster.thing\nCREATE TABLE roster.athing (n bigint NOT NULL, PRIMARY KEY (n));\nSELECT COUNT(*) AS n FROM roster.thing t;\n",
        );
        let configured = set(&["edfi.student", "edfi.school"]);
        let models = Models::load(&dir, &["ic"], &configured).unwrap();
        let names: Vec<&str> = models.models().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["roster.thing", "roster.athing"]);
        assert_eq!(models.models()[1].upstream, ["roster.thing"]);
        write(
            &dir,
            "ic",
            "b.sql",
            &GOOD
                .replace(
                    "-- inputs: edfi.school",
                    "-- inputs: edfi.school, roster.athing",
                )
                .replace(
                    "CROSS JOIN edfi.school sc",
                    "CROSS JOIN edfi.school sc CROSS JOIN roster.athing",
                ),
        );
        let err = Models::load(&dir, &["ic"], &configured).unwrap_err();
        assert!(err.to_string().contains("dependency cycle"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn non_portable_types_and_syntax_are_errors() {
        let dir = tempdir("portable");
        write(
            &dir,
            "ic",
            "thing.sql",
            &GOOD
                .replace("amount decimal(9, 3)", "amount text")
                .replace("CAST(NULL AS decimal(9,3))", "NULL::text"),
        );
        let err = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("column amount: type `text`"), "{err}");
        assert!(err.contains("`::` is not valid"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn headers_and_keys_are_checked() {
        let dir = tempdir("headers");
        let configured = set(&["edfi.student", "edfi.school"]);
        for (from, to, expect) in [
            (
                "-- model: roster.thing",
                "-- model: roster.other",
                "header names model roster.other",
            ),
            (
                "schoolid integer NOT NULL",
                "schoolid integer",
                "primary key column schoolid must be declared NOT NULL",
            ),
            (
                "-- model: roster.thing",
                "-- modell: roster.thing",
                "missing the `-- model: schema.table` header line",
            ),
        ] {
            write(&dir, "ic", "thing.sql", &GOOD.replace(from, to));
            let err = Models::load(&dir, &["ic"], &configured)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn history_names_a_year_column_and_needs_the_school_years() {
        let dir = tempdir("history");
        let with = |line: &str| {
            GOOD.replace(
                "-- inputs: edfi.school\n",
                &format!("-- inputs: edfi.school\n{line}\n"),
            )
        };
        let years = set(&["edfi.student", "edfi.school", "edfi.schoolyeartype"]);
        write(&dir, "ic", "thing.sql", &with("-- history: schoolid"));
        let models = Models::load(&dir, &["ic"], &years).unwrap();
        assert_eq!(models.models()[0].history.as_deref(), Some("schoolid"));
        // The current school year is read from edfi.schoolyeartype, not an input of the SELECT.
        assert_eq!(models.models()[0].inputs, ["edfi.school", "edfi.student"]);
        let err = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("add SchoolYearType to the group's `tables`"),
            "{err}"
        );
        for (line, expect) in [
            (
                "-- history: year",
                "`-- history: year` names no column of the table",
            ),
            (
                "-- history: amount",
                "the column is decimal(9,3), not the school year",
            ),
        ] {
            write(&dir, "ic", "thing.sql", &with(line));
            let err = Models::load(&dir, &["ic"], &years).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn students_of_maps_an_input_of_an_incremental_model_with_replicated_tables() {
        let dir = tempdir("students_of");
        let line = "-- students_of: edfi.school: SELECT s.studentusi FROM edfi.student s JOIN {changed} c ON c.schoolid = 1";
        let model = |extra: &str| {
            GOOD.replace(
                "-- inputs: edfi.school\n",
                &format!("-- inputs: edfi.school\n-- incremental: studentnumber\n{extra}\n"),
            )
        };
        let all = set(&["edfi.student", "edfi.school"]);
        write(&dir, "ic", "thing.sql", &model(line));
        let models = Models::load(&dir, &["ic"], &all).unwrap();
        assert_eq!(models.models()[0].students_of[0].0, "edfi.school");
        for (extra, expect) in [
            (
                line.replace("{changed}", "edfi.school"),
                "where {changed} is the flush's rows",
            ),
            (
                line.replace("edfi.school:", "edfi.staff:"),
                "edfi.staff is not an input of the model",
            ),
            (
                line.replace("edfi.student s", "edfi.staff s"),
                "reads edfi.staff, not replicated tables",
            ),
        ] {
            write(&dir, "ic", "thing.sql", &model(&extra));
            let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        let plain = GOOD.replace(
            "-- inputs: edfi.school\n",
            &format!("-- inputs: edfi.school\n{line}\n"),
        );
        write(&dir, "ic", "thing.sql", &plain);
        let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
        assert!(err.contains("only an incremental model"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn refresh_by_names_a_column_and_inputs_of_the_model() {
        let dir = tempdir("refresh_by");
        let model = |extra: &str| {
            GOOD.replace(
                "-- inputs: edfi.school\n",
                &format!("-- inputs: edfi.school\n{extra}\n"),
            )
        };
        let all = set(&["edfi.student", "edfi.school"]);
        write(
            &dir,
            "ic",
            "thing.sql",
            &model("-- refresh_by: SchoolId = schoolid: edfi.school"),
        );
        let models = Models::load(&dir, &["ic"], &all).unwrap();
        assert_eq!(
            models.models()[0].refresh_by,
            Some(RefreshBy {
                column: "schoolid".into(),
                key: "schoolid".into(),
                inputs: vec!["edfi.school".into()],
            })
        );
        for (extra, expect) in [
            (
                "-- refresh_by: schoolid: edfi.school",
                "write `-- refresh_by:",
            ),
            (
                "-- refresh_by: schoolid = schoolid:",
                "write `-- refresh_by:",
            ),
            (
                "-- refresh_by: nothere = schoolid: edfi.school",
                "`-- refresh_by: nothere = …` names no column",
            ),
            (
                "-- refresh_by: schoolid = schoolid: edfi.staff",
                "lists edfi.staff, not input(s) of the model",
            ),
            (
                "-- incremental: studentnumber\n-- refresh_by: schoolid = schoolid: edfi.school",
                "exclude each other",
            ),
        ] {
            write(&dir, "ic", "thing.sql", &model(extra));
            let err = Models::load(&dir, &["ic"], &all).unwrap_err().to_string();
            assert!(err.contains(expect), "{extra}: {err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_upstream_tables_are_described_from_their_declarations() {
        let dir = tempdir("standin");
        write(&dir, "ic", "b.sql", GOOD);
        write(
            &dir,
            "ic",
            "a.sql",
            "-- model: roster.athing\n-- inputs: roster.thing\nCREATE TABLE roster.athing (n bigint NOT NULL, PRIMARY KEY (n));\nWITH x AS (SELECT t.schoolid FROM roster.thing t) SELECT COUNT(*) AS n FROM x;\n",
        );
        let models = Models::load(&dir, &["ic"], &set(&["edfi.student", "edfi.school"])).unwrap();
        let up = &models.models()[0];
        let sql = models.models()[1].select_with_stand_ins(&[(&up.name, &up.columns)]);
        assert!(
            sql.starts_with(
                "WITH \"roster__thing\" AS (SELECT CAST(NULL AS varchar(32)) AS \"studentnumber\""
            ),
            "{sql}"
        );
        assert!(
            sql.contains("WHERE 1 = 0), x AS (SELECT t.schoolid FROM \"roster__thing\" t)"),
            "{sql}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn column_types_parse_to_one_spelling() {
        assert_eq!(ColumnType::parse("INT").unwrap(), ColumnType::Integer);
        assert_eq!(
            ColumnType::parse("character varying(20)").unwrap(),
            ColumnType::Varchar(20)
        );
        assert_eq!(
            ColumnType::parse("NUMERIC(5, 2)").unwrap(),
            ColumnType::Decimal(5, 2)
        );
        assert!(ColumnType::parse("varchar").is_err());
        assert!(ColumnType::parse("timestamptz").is_err());
        assert_eq!(ColumnType::Decimal(5, 2).to_string(), "decimal(5,2)");
    }
}
