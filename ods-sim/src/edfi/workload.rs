//! The change workload: transactions written straight to the backing PostgreSQL database (the
//! Change Tracking triggers record them), paced to a rate of changed rows per second, with a
//! realistic mix of updates, inserts, deletes, multi-table transactions and primary-key updates.
//!
//! Every transaction keeps the invariant *every StudentSchoolAssociation has at least one
//! StudentSectionAssociation of the same student in a section of the same school*. Only rows of
//! the current school year change; the earlier years' stay as loaded. Transactions
//! about a student first lock that student's row, so concurrent writers serialise per student
//! and do not deadlock; serialization failures, deadlocks and unique violations are retried.
//!
//! With one writer the sequence of changes is a function of the seed and the database content
//! (`CreateDate`/`LastModifiedDate` carry the wall-clock time, as in the ODS).

use super::descriptors;
use super::plan::{self, ILLUMINATE_NS, SCHOOL_YEAR, SUBJECTS};
use super::setup::connect;
use chrono::{NaiveDate, NaiveDateTime};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::{Client, Transaction};

/// How to run the workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Changed rows per second, over all writers (mean, bursts included).
    pub rate: f64,
    pub seed: u64,
    /// Concurrent writers, each with its own connection.
    pub writers: usize,
    /// Stop after this many changed rows (all writers together; the last transactions may pass
    /// it by a few rows).
    pub max_changes: Option<u64>,
    /// Stop after this much time.
    pub duration: Option<Duration>,
    /// Now and then run a few seconds at several times the rate.
    pub bursts: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            rate: 50.0,
            seed: 1,
            writers: 1,
            max_changes: None,
            duration: None,
            bursts: true,
        }
    }
}

/// Kind of a row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// What a workload run did.
#[derive(Debug, Clone, Default)]
pub struct WorkloadStats {
    /// Committed transactions.
    pub transactions: u64,
    /// Committed transactions per kind (e.g. `enroll`, `withdraw`, `begin_date`).
    pub kinds: BTreeMap<&'static str, u64>,
    /// Rows written per (table, op). A primary-key update counts as one `Update` (Change
    /// Tracking shows it as a delete of the old key and an insert of the new one).
    pub changes: BTreeMap<(String, Op), u64>,
    /// Transactions retried after a serialization failure, deadlock or unique violation.
    pub retries: u64,
    pub elapsed: Duration,
}

impl WorkloadStats {
    /// All rows written.
    pub fn total_changes(&self) -> u64 {
        self.changes.values().sum()
    }

    fn merge(&mut self, other: WorkloadStats) {
        self.transactions += other.transactions;
        self.retries += other.retries;
        for (k, v) in other.kinds {
            *self.kinds.entry(k).or_default() += v;
        }
        for (k, v) in other.changes {
            *self.changes.entry(k).or_default() += v;
        }
    }
}

/// Transaction kinds and their weights.
const KINDS: &[(&str, u32)] = &[
    ("student_name", 14),
    ("email", 8),
    ("exit_date", 6),
    ("score", 14),
    ("enroll", 6),
    ("withdraw", 4),
    ("begin_date", 10),
    ("assessment", 12),
    ("section_change", 8),
    ("delete_assessment", 3),
    ("transfer", 3),
    ("staff", 3),
    ("calendar", 2),
];

/// Burst parameters: chance per second of starting one, duration and rate multiplier ranges.
const BURST_CHANCE: f64 = 0.02;
const BURST_SECS: (f64, f64) = (1.0, 3.0);
const BURST_FACTOR: (f64, f64) = (3.0, 6.0);

/// Runs the workload against the database at `database_url` until `stop` turns true, the
/// duration passes or `max_changes` rows are written.
pub async fn run_workload(
    database_url: &str,
    cfg: WorkloadConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<WorkloadStats> {
    anyhow::ensure!(cfg.rate > 0.0, "the workload rate must be positive");
    let started = Instant::now();
    let writers = cfg.writers.max(1);
    let client = connect(database_url).await?;
    let refs = Arc::new(Reference::load(&client).await?);
    drop(client);
    let committed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let url = database_url.to_string();
        let cfg = cfg.clone();
        let refs = refs.clone();
        let committed = committed.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await?;
            Writer::new(w, writers, client, cfg, refs, committed, started)
                .run(stop)
                .await
        }));
    }
    let mut stats = WorkloadStats::default();
    for t in tasks {
        stats.merge(t.await??);
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// (subject index, grade) → Illuminate assessments with their item codes.
type AssessmentIndex = BTreeMap<(usize, u8), Vec<(String, Vec<String>)>>;

/// Reference data the transactions pick from (read once at start).
struct Reference {
    schools: Vec<SchoolRef>,
    assessments: AssessmentIndex,
    max_student: i32,
    /// The number ([`plan::student_unique_id`]) of the first student the workload creates.
    next_number: i32,
    max_staff: i32,
}

struct SchoolRef {
    id: i32,
    calendar_code: String,
    grades: Vec<u8>,
    /// Session name → (begin, end).
    sessions: BTreeMap<String, (NaiveDate, NaiveDate)>,
    /// (subject index, grade, session name) → section identifiers.
    sections: BTreeMap<(usize, u8, String), Vec<String>>,
    /// (subject index, grade) → the `LocalCourseCode` of the course's sections.
    course_codes: BTreeMap<(usize, u8), String>,
}

impl Reference {
    async fn load(client: &Client) -> anyhow::Result<Reference> {
        let mut schools: BTreeMap<i32, SchoolRef> = BTreeMap::new();
        for r in client
            .query(
                r#"SELECT s."SchoolId", c."CalendarCode" FROM "edfi"."School" s
                   JOIN "edfi"."Calendar" c ON c."SchoolId" = s."SchoolId" AND c."SchoolYear" = $1
                   ORDER BY 1"#,
                &[&SCHOOL_YEAR],
            )
            .await?
        {
            schools.insert(
                r.get(0),
                SchoolRef {
                    id: r.get(0),
                    calendar_code: r.get(1),
                    grades: Vec::new(),
                    sessions: BTreeMap::new(),
                    sections: BTreeMap::new(),
                    course_codes: BTreeMap::new(),
                },
            );
        }
        for r in client
            .query(
                r#"SELECT "SchoolId", "GradeLevelDescriptorId" FROM "edfi"."SchoolGradeLevel" ORDER BY 1, 2"#,
                &[],
            )
            .await?
        {
            if let (Some(s), Some(g)) = (
                schools.get_mut(&r.get::<_, i32>(0)),
                descriptors::grade_of(r.get(1)),
            ) {
                s.grades.push(g);
            }
        }
        for r in client
            .query(
                r#"SELECT "SchoolId", "SessionName", "BeginDate", "EndDate" FROM "edfi"."Session"
                   WHERE "SchoolYear" = $1 ORDER BY 1, 2"#,
                &[&SCHOOL_YEAR],
            )
            .await?
        {
            if let Some(s) = schools.get_mut(&r.get::<_, i32>(0)) {
                s.sessions.insert(r.get(1), (r.get(2), r.get(3)));
            }
        }
        for r in client
            .query(
                r#"SELECT "SchoolId", "LocalCourseCode", "SessionName", "SectionIdentifier"
                   FROM "edfi"."Section" WHERE "SchoolYear" = $1 ORDER BY 1, 2, 3, 4"#,
                &[&SCHOOL_YEAR],
            )
            .await?
        {
            let code: String = r.get(1);
            if let (Some(s), Some((subject, grade))) = (
                schools.get_mut(&r.get::<_, i32>(0)),
                plan::parse_local_course_code(&code),
            ) {
                s.course_codes.insert((subject, grade), code);
                s.sections
                    .entry((subject, grade, r.get(2)))
                    .or_default()
                    .push(r.get(3));
            }
        }
        let subject_of: BTreeMap<i32, usize> = SUBJECTS
            .iter()
            .enumerate()
            .map(|(i, (_, name))| (descriptors::id("AcademicSubjectDescriptor", name), i))
            .collect();
        let mut assessments = AssessmentIndex::new();
        for r in client
            .query(
                r#"SELECT a."AssessmentIdentifier", s."AcademicSubjectDescriptorId", g."GradeLevelDescriptorId",
                          array_agg(i."IdentificationCode" ORDER BY i."IdentificationCode")
                   FROM "edfi"."Assessment" a
                   JOIN "edfi"."AssessmentAcademicSubject" s USING ("AssessmentIdentifier", "Namespace")
                   JOIN "edfi"."AssessmentAssessedGradeLevel" g USING ("AssessmentIdentifier", "Namespace")
                   JOIN "edfi"."AssessmentItem" i USING ("AssessmentIdentifier", "Namespace")
                   WHERE a."Namespace" = $1
                   GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"#,
                &[&ILLUMINATE_NS],
            )
            .await?
        {
            if let (Some(subject), Some(grade)) = (
                subject_of.get(&r.get::<_, i32>(1)),
                descriptors::grade_of(r.get(2)),
            ) {
                assessments
                    .entry((*subject, grade))
                    .or_default()
                    .push((r.get(0), r.get(3)));
            }
        }
        let max = |sql: &'static str| async move {
            let r = client.query_one(sql, &[]).await?;
            anyhow::Ok(r.get::<_, Option<i32>>(0).unwrap_or(0))
        };
        let max_student = max(r#"SELECT max("StudentUSI") FROM "edfi"."Student""#).await?;
        // New students are numbered past every StudentUniqueId made so far: an earlier
        // workload's writers, each counting on its own, may have used numbers beyond the
        // highest StudentUSI.
        let max_number: i64 = client
            .query_one(
                &format!(
                    r#"SELECT COALESCE(max(CAST("StudentUniqueId" AS bigint)), 0) - {}
                       FROM "edfi"."Student" WHERE "StudentUniqueId" ~ '^[0-9]{{1,18}}$'"#,
                    plan::STUDENT_UNIQUE_ID_BASE
                ),
                &[],
            )
            .await?
            .get(0);
        let next_number = i32::try_from(max_number.max(i64::from(max_student)) + 1)?;
        let max_staff = max(r#"SELECT max("StaffUSI") FROM "edfi"."Staff""#).await?;
        let schools: Vec<SchoolRef> = schools
            .into_values()
            .filter(|s| !s.grades.is_empty() && !s.sections.is_empty())
            .collect();
        anyhow::ensure!(
            !schools.is_empty() && max_student > 0,
            "the database holds no Ed-Fi sample data"
        );
        Ok(Reference {
            schools,
            assessments,
            max_student,
            next_number,
            max_staff,
        })
    }

    fn school(&self, id: i32) -> Option<&SchoolRef> {
        self.schools.iter().find(|s| s.id == id)
    }
}

/// Paces a writer: virtual time advances by changes / rate; the writer sleeps until the wall
/// clock catches up. Bursts run the rate several times faster for a few seconds.
struct Pacer {
    start: Instant,
    virtual_secs: f64,
    rate: f64,
    factor: f64,
    burst_until: f64,
    next_roll: f64,
    bursts: bool,
    rng: ChaCha8Rng,
}

impl Pacer {
    fn new(rate: f64, bursts: bool, rng: ChaCha8Rng) -> Pacer {
        // Bursts add on average BURST_CHANCE · mean duration · (mean factor − 1) seconds' worth
        // of changes per second; the base rate gives them back so the mean stays `rate`.
        let extra = if bursts {
            BURST_CHANCE * (BURST_SECS.0 + BURST_SECS.1) / 2.0
                * ((BURST_FACTOR.0 + BURST_FACTOR.1) / 2.0 - 1.0)
        } else {
            0.0
        };
        Pacer {
            start: Instant::now(),
            virtual_secs: 0.0,
            rate: rate / (1.0 + extra),
            factor: 1.0,
            burst_until: 0.0,
            next_roll: 1.0,
            bursts,
            rng,
        }
    }

    fn due(&mut self) -> Instant {
        let due = self.start + Duration::from_secs_f64(self.virtual_secs);
        let now = Instant::now();
        // A writer that fell behind (slow database) catches up at most one second's worth.
        if due + Duration::from_secs(1) < now {
            self.start += now - (due + Duration::from_secs(1));
            return now - Duration::from_secs(1);
        }
        due
    }

    fn charge(&mut self, changes: u64) {
        self.virtual_secs += changes as f64 / (self.rate * self.factor);
        while self.virtual_secs >= self.next_roll {
            self.next_roll += 1.0;
            if self.factor > 1.0 && self.virtual_secs >= self.burst_until {
                self.factor = 1.0;
            }
            if self.bursts && self.factor == 1.0 && self.rng.gen_bool(BURST_CHANCE) {
                self.factor = self.rng.gen_range(BURST_FACTOR.0..BURST_FACTOR.1);
                self.burst_until =
                    self.virtual_secs + self.rng.gen_range(BURST_SECS.0..BURST_SECS.1);
            }
        }
    }
}

struct Writer {
    index: usize,
    writers: usize,
    client: Client,
    cfg: WorkloadConfig,
    refs: Arc<Reference>,
    committed: Arc<AtomicU64>,
    started: Instant,
    rng: ChaCha8Rng,
    /// New students created by this writer.
    created: i32,
    stats: WorkloadStats,
}

/// Rows written by one transaction.
type Changes = Vec<(&'static str, Op, u64)>;

/// Whether a failed transaction is tried again (with new random choices): conflicts with
/// another writer, and a column dropped meanwhile (a test changing the schema under the
/// workload: a name update that picked `MiddleName` after its drop picks again).
fn retryable(e: &anyhow::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.chain()
        .filter_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .filter_map(|e| e.code())
        .any(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::UNDEFINED_COLUMN
        })
}

const MAX_ATTEMPTS: u32 = 10;

impl Writer {
    fn new(
        index: usize,
        writers: usize,
        client: Client,
        cfg: WorkloadConfig,
        refs: Arc<Reference>,
        committed: Arc<AtomicU64>,
        started: Instant,
    ) -> Writer {
        Writer {
            index,
            writers,
            client,
            rng: plan::stream(cfg.seed, "workload", index as u64),
            cfg,
            refs,
            committed,
            started,
            created: 0,
            stats: WorkloadStats::default(),
        }
    }

    fn done(&self, stop: &watch::Receiver<bool>) -> bool {
        *stop.borrow()
            || self
                .cfg
                .duration
                .is_some_and(|d| self.started.elapsed() >= d)
            || self
                .cfg
                .max_changes
                .is_some_and(|m| self.committed.load(Ordering::SeqCst) >= m)
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<WorkloadStats> {
        let mut pacer = Pacer::new(
            self.cfg.rate / self.writers as f64,
            self.cfg.bursts,
            plan::stream(self.cfg.seed, "bursts", self.index as u64),
        );
        let deadline = self.cfg.duration.map(|d| self.started + d);
        let mut stop_open = true;
        while !self.done(&stop) {
            let due = pacer.due();
            let due = deadline.map_or(due, |d| due.min(d));
            if due > Instant::now() {
                let sleep = tokio::time::sleep_until(due.into());
                if stop_open {
                    tokio::select! {
                        _ = sleep => {}
                        changed = stop.changed() => stop_open = changed.is_ok(),
                    }
                } else {
                    sleep.await;
                }
                continue;
            }
            let (kind, changes) = self.transaction().await?;
            let n: u64 = changes.iter().map(|c| c.2).sum();
            self.committed.fetch_add(n, Ordering::SeqCst);
            self.stats.transactions += 1;
            *self.stats.kinds.entry(kind).or_default() += 1;
            for (table, op, k) in changes {
                if k > 0 {
                    *self
                        .stats
                        .changes
                        .entry((table.to_string(), op))
                        .or_default() += k;
                }
            }
            pacer.charge(n.max(1));
        }
        Ok(self.stats)
    }

    /// Runs one transaction (retrying transient failures) and returns its kind and changes.
    async fn transaction(&mut self) -> anyhow::Result<(&'static str, Changes)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt().await {
                Ok(done) => return Ok(done),
                Err(e) if attempt < MAX_ATTEMPTS && retryable(&e) => {
                    self.stats.retries += 1;
                    tracing::debug!(
                        writer = self.index,
                        "retrying a workload transaction: {e:#}"
                    );
                    let ms = self.rng.gen_range(1..10u64) * u64::from(attempt);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn attempt(&mut self) -> anyhow::Result<(&'static str, Changes)> {
        loop {
            let weights: Vec<u32> = KINDS.iter().map(|k| k.1).collect();
            let kind = KINDS[plan::weighted(&mut self.rng, &weights)].0;
            let now = now();
            let number =
                self.refs.next_number + self.index as i32 + self.created * self.writers as i32;
            let usi = self
                .rng
                .gen_range(1..=self.refs.max_student + self.created * self.writers as i32);
            let refs = self.refs.clone();
            let tx = self.client.transaction().await?;
            let mut t = Tx {
                tx: &tx,
                rng: &mut self.rng,
                refs: &refs,
                now,
                changes: Vec::new(),
            };
            let applied = match kind {
                "enroll" => t.enroll(number).await?,
                "staff" => t.staff().await?,
                "calendar" => t.calendar().await?,
                _ => match t.lock_student(usi).await? {
                    None => false,
                    Some(uid) => match kind {
                        "student_name" => t.student_name(usi).await?,
                        "email" => t.email(usi).await?,
                        "exit_date" => t.exit_date(usi).await?,
                        "score" => t.score(usi).await?,
                        "withdraw" => t.withdraw(usi).await?,
                        "begin_date" => t.begin_date(usi).await?,
                        "assessment" => t.assessment(usi, &uid).await?,
                        "section_change" => t.section_change(usi).await?,
                        "delete_assessment" => t.delete_assessment(usi).await?,
                        "transfer" => t.transfer(usi).await?,
                        other => unreachable!("unknown workload kind {other}"),
                    },
                },
            };
            let changes = std::mem::take(&mut t.changes);
            if applied && !changes.is_empty() {
                tx.commit().await?;
                if kind == "enroll" {
                    self.created += 1;
                }
                return Ok((kind, changes));
            }
            tx.rollback().await?;
        }
    }
}

/// The wall-clock time in microseconds (the precision the backing columns store).
fn now() -> NaiveDateTime {
    use chrono::Timelike;
    let t = chrono::Utc::now().naive_utc();
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

/// A student's school association.
struct Ssa {
    entry: NaiveDate,
    school: i32,
    grade: Option<u8>,
    exit: Option<NaiveDate>,
}

/// A student's section association.
#[derive(Clone)]
struct SecA {
    begin: NaiveDate,
    course: String,
    school: i32,
    section: String,
    session: String,
    end: Option<NaiveDate>,
}

/// One transaction's context.
struct Tx<'a> {
    tx: &'a Transaction<'a>,
    rng: &'a mut ChaCha8Rng,
    refs: &'a Reference,
    now: NaiveDateTime,
    changes: Changes,
}

fn random_day(rng: &mut ChaCha8Rng, from: NaiveDate, to: NaiveDate) -> NaiveDate {
    let days = (to - from).num_days().max(0);
    from + chrono::Duration::days(rng.gen_range(0..=days))
}

impl Tx<'_> {
    fn record(&mut self, table: &'static str, op: Op, rows: u64) {
        self.changes.push((table, op, rows));
    }

    async fn lock_student(&mut self, usi: i32) -> anyhow::Result<Option<String>> {
        let row = self
            .tx
            .query_opt(
                r#"SELECT "StudentUniqueId" FROM "edfi"."Student" WHERE "StudentUSI" = $1 FOR UPDATE"#,
                &[&usi],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn ssas(&self, usi: i32) -> anyhow::Result<Vec<Ssa>> {
        Ok(self
            .tx
            .query(
                r#"SELECT "EntryDate", "SchoolId", "EntryGradeLevelDescriptorId", "ExitWithdrawDate"
                   FROM "edfi"."StudentSchoolAssociation" WHERE "StudentUSI" = $1 AND "SchoolYear" = $2
                   ORDER BY 1, 2"#,
                &[&usi, &SCHOOL_YEAR],
            )
            .await?
            .into_iter()
            .map(|r| Ssa {
                entry: r.get(0),
                school: r.get(1),
                grade: descriptors::grade_of(r.get(2)),
                exit: r.get(3),
            })
            .collect())
    }

    async fn sections(&self, usi: i32) -> anyhow::Result<Vec<SecA>> {
        Ok(self
            .tx
            .query(
                r#"SELECT "BeginDate", "LocalCourseCode", "SchoolId", "SectionIdentifier", "SessionName", "EndDate"
                   FROM "edfi"."StudentSectionAssociation" WHERE "StudentUSI" = $1 AND "SchoolYear" = $2
                   ORDER BY 1, 2, 3, 4, 5"#,
                &[&usi, &SCHOOL_YEAR],
            )
            .await?
            .into_iter()
            .map(|r| SecA {
                begin: r.get(0),
                course: r.get(1),
                school: r.get(2),
                section: r.get(3),
                session: r.get(4),
                end: r.get(5),
            })
            .collect())
    }

    async fn student_name(&mut self, usi: i32) -> anyhow::Result<bool> {
        let column = ["FirstName", "MiddleName", "LastSurname"][self.rng.gen_range(0..3)];
        let value = if column == "LastSurname" {
            plan::random_last_name(self.rng).0
        } else {
            plan::random_first_name(self.rng).0
        };
        let n = self
            .tx
            .execute(
                &format!(
                    r#"UPDATE "edfi"."Student" SET "{column}" = $2, "LastModifiedDate" = $3 WHERE "StudentUSI" = $1"#
                ),
                &[&usi, &value, &self.now],
            )
            .await?;
        self.record("Student", Op::Update, n);
        Ok(true)
    }

    async fn email(&mut self, usi: i32) -> anyhow::Result<bool> {
        let rows = self
            .tx
            .query(
                r#"SELECT "EducationOrganizationId", "ElectronicMailAddress", "ElectronicMailTypeDescriptorId"
                   FROM "edfi"."StudentEducationOrganizationAssociationElectronicMail"
                   WHERE "StudentUSI" = $1 ORDER BY 1, 2, 3"#,
                &[&usi],
            )
            .await?;
        let Some(r) = rows.choose(self.rng) else {
            return Ok(false);
        };
        let (edorg, address, ty): (i32, String, i32) = (r.get(0), r.get(1), r.get(2));
        let n = if self.rng.gen_bool(0.6) {
            let first = plan::random_first_name(self.rng).1;
            let last = plan::random_last_name(self.rng).1;
            let new = format!(
                "{first}.{last}{}@mail.example.com",
                self.rng.gen_range(100..100_000)
            );
            if rows.iter().any(|r| r.get::<_, String>(1) == new) {
                return Ok(false);
            }
            self.tx
                .execute(
                    r#"UPDATE "edfi"."StudentEducationOrganizationAssociationElectronicMail"
                       SET "ElectronicMailAddress" = $5
                       WHERE "EducationOrganizationId" = $1 AND "ElectronicMailAddress" = $2
                         AND "ElectronicMailTypeDescriptorId" = $3 AND "StudentUSI" = $4"#,
                    &[&edorg, &address, &ty, &usi, &new],
                )
                .await?
        } else {
            self.tx
                .execute(
                    r#"UPDATE "edfi"."StudentEducationOrganizationAssociationElectronicMail"
                       SET "DoNotPublishIndicator" = NOT coalesce("DoNotPublishIndicator", false)
                       WHERE "EducationOrganizationId" = $1 AND "ElectronicMailAddress" = $2
                         AND "ElectronicMailTypeDescriptorId" = $3 AND "StudentUSI" = $4"#,
                    &[&edorg, &address, &ty, &usi],
                )
                .await?
        };
        self.record(
            "StudentEducationOrganizationAssociationElectronicMail",
            Op::Update,
            n,
        );
        Ok(true)
    }

    async fn exit_date(&mut self, usi: i32) -> anyhow::Result<bool> {
        let ssas = self.ssas(usi).await?;
        let Some(a) = ssas.choose(self.rng) else {
            return Ok(false);
        };
        let (exit, ty) = match a.exit {
            Some(_) => (None, None),
            None => {
                let last = plan::last_student_day();
                if a.entry >= last {
                    return Ok(false);
                }
                let day = random_day(self.rng, a.entry + chrono::Duration::days(1), last);
                let code =
                    ["Transferred", "Moved out of state", "Withdrawn"][self.rng.gen_range(0..3)];
                (
                    Some(day),
                    Some(descriptors::id("ExitWithdrawTypeDescriptor", code)),
                )
            }
        };
        let n = self
            .tx
            .execute(
                r#"UPDATE "edfi"."StudentSchoolAssociation"
                   SET "ExitWithdrawDate" = $4, "ExitWithdrawTypeDescriptorId" = $5, "LastModifiedDate" = $6
                   WHERE "EntryDate" = $1 AND "SchoolId" = $2 AND "StudentUSI" = $3"#,
                &[&a.entry, &a.school, &usi, &exit, &ty, &self.now],
            )
            .await?;
        self.record("StudentSchoolAssociation", Op::Update, n);
        Ok(true)
    }

    async fn student_assessments(&self, usi: i32) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self
            .tx
            .query(
                r#"SELECT "AssessmentIdentifier", "StudentAssessmentIdentifier" FROM "edfi"."StudentAssessment"
                   WHERE "StudentUSI" = $1 AND "Namespace" = $2 ORDER BY 1, 2"#,
                &[&usi, &ILLUMINATE_NS],
            )
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn score(&mut self, usi: i32) -> anyhow::Result<bool> {
        let taken = self.student_assessments(usi).await?;
        let Some((assessment, sa)) = taken.choose(self.rng) else {
            return Ok(false);
        };
        let raw = self.rng.gen_range(0..=plan::ITEMS as u32);
        let raw_id = descriptors::id("AssessmentReportingMethodDescriptor", "Raw score");
        let scale_id = descriptors::id("AssessmentReportingMethodDescriptor", "Scale score");
        let key = r#"WHERE "AssessmentIdentifier" = $1 AND "Namespace" = $2 AND "StudentAssessmentIdentifier" = $3 AND "StudentUSI" = $4"#;
        let mut n = 0;
        for (method, value) in [(raw_id, raw), (scale_id, plan::scale_score(raw))] {
            n += self
                .tx
                .execute(
                    &format!(
                        r#"UPDATE "edfi"."StudentAssessmentScoreResult" SET "Result" = $6 {key} AND "AssessmentReportingMethodDescriptorId" = $5"#
                    ),
                    &[assessment, &ILLUMINATE_NS, sa, &usi, &method, &value.to_string()],
                )
                .await?;
        }
        self.record("StudentAssessmentScoreResult", Op::Update, n);
        let level = plan::performance_level(raw);
        let level_id = descriptors::id("PerformanceLevelDescriptor", level);
        let met = matches!(level, "Advanced" | "Proficient");
        let n = self
            .tx
            .execute(
                &format!(
                    r#"UPDATE "edfi"."StudentAssessmentPerformanceLevel"
                       SET "PerformanceLevelDescriptorId" = $5, "PerformanceLevelMet" = $6 {key}"#
                ),
                &[assessment, &ILLUMINATE_NS, sa, &usi, &level_id, &met],
            )
            .await?;
        self.record("StudentAssessmentPerformanceLevel", Op::Update, n);
        let n = self
            .tx
            .execute(
                &format!(r#"UPDATE "edfi"."StudentAssessment" SET "LastModifiedDate" = $5 {key}"#),
                &[assessment, &ILLUMINATE_NS, sa, &usi, &self.now],
            )
            .await?;
        self.record("StudentAssessment", Op::Update, n);
        Ok(true)
    }

    /// Inserts section associations for a new school association: each subject in every
    /// session that ends on or after `entry`.
    async fn enroll_sections(
        &mut self,
        usi: i32,
        school: &SchoolRef,
        grade: u8,
        entry: NaiveDate,
    ) -> anyhow::Result<u64> {
        let mut n = 0;
        for (session, (begin, end)) in &school.sessions {
            if *end < entry {
                continue;
            }
            for subject in 0..SUBJECTS.len() {
                let (Some(sections), Some(code)) = (
                    school.sections.get(&(subject, grade, session.clone())),
                    school.course_codes.get(&(subject, grade)),
                ) else {
                    continue;
                };
                let section = sections.choose(self.rng).expect("non-empty section list");
                n += self
                    .tx
                    .execute(
                        r#"INSERT INTO "edfi"."StudentSectionAssociation"
                           ("BeginDate", "LocalCourseCode", "SchoolId", "SchoolYear", "SectionIdentifier",
                            "SessionName", "StudentUSI", "EndDate", "HomeroomIndicator",
                            "CreateDate", "LastModifiedDate", "Id")
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, $9, $9, $10)"#,
                        &[
                            &entry.max(*begin),
                            code,
                            &school.id,
                            &SCHOOL_YEAR,
                            section,
                            session,
                            &usi,
                            end,
                            &self.now,
                            &plan::random_uuid(self.rng),
                        ],
                    )
                    .await?;
            }
        }
        self.record("StudentSectionAssociation", Op::Insert, n);
        Ok(n)
    }

    async fn insert_ssa(
        &mut self,
        usi: i32,
        school: &SchoolRef,
        grade: u8,
        entry: NaiveDate,
        entry_type: &str,
    ) -> anyhow::Result<()> {
        let n = self
            .tx
            .execute(
                r#"INSERT INTO "edfi"."StudentSchoolAssociation"
                   ("EntryDate", "SchoolId", "StudentUSI", "PrimarySchool", "EntryGradeLevelDescriptorId",
                    "EntryTypeDescriptorId", "ClassOfSchoolYear", "ResidencyStatusDescriptorId", "CalendarCode",
                    "SchoolYear", "FullTimeEquivalency", "CreateDate", "LastModifiedDate", "Id")
                   VALUES ($1, $2, $3, true, $4, $5, $6, $7, $8, $9, 1.00, $10, $10, $11)"#,
                &[
                    &entry,
                    &school.id,
                    &usi,
                    &descriptors::grade(grade),
                    &descriptors::id("EntryTypeDescriptor", entry_type),
                    &(SCHOOL_YEAR + 12 - i16::from(grade)),
                    &descriptors::id(
                        "ResidencyStatusDescriptor",
                        "Resident of admin unit and school area",
                    ),
                    &school.calendar_code,
                    &SCHOOL_YEAR,
                    &self.now,
                    &plan::random_uuid(self.rng),
                ],
            )
            .await?;
        self.record("StudentSchoolAssociation", Op::Insert, n);
        Ok(())
    }

    /// A new student: Student, race, e-mail, school association and section associations. The
    /// Student row is inserted as the Ed-Fi API writes it: `StudentUSI` from the identity
    /// column, `CreateDate` and `LastModifiedDate` from their defaults, the resource `Id` given;
    /// `number` makes the `StudentUniqueId`.
    async fn enroll(&mut self, number: i32) -> anyhow::Result<bool> {
        let refs = self.refs;
        let school = refs.schools.choose(self.rng).expect("schools");
        let grade = *school.grades.choose(self.rng).expect("grades");
        let entry = random_day(self.rng, plan::first_student_day(), plan::date(2025, 5, 30));
        let first = plan::random_first_name(self.rng);
        let last = plan::random_last_name(self.rng);
        let birth = plan::date(2019 - i32::from(grade), 9, 1)
            + chrono::Duration::days(self.rng.gen_range(0..365));
        let sex = descriptors::id(
            "SexDescriptor",
            ["Female", "Male"][self.rng.gen_range(0..2)],
        );
        let uid = plan::student_unique_id(number);
        let usi: i32 = self
            .tx
            .query_one(
                r#"INSERT INTO "edfi"."Student" ("FirstName", "LastSurname", "BirthDate",
                   "BirthSexDescriptorId", "StudentUniqueId", "Id")
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING "StudentUSI""#,
                &[
                    &first.0,
                    &last.0,
                    &birth,
                    &sex,
                    &uid,
                    &plan::random_uuid(self.rng),
                ],
            )
            .await?
            .get(0);
        self.record("Student", Op::Insert, 1);
        let race = *descriptors::ids("RaceDescriptor")
            .choose(self.rng)
            .expect("races");
        let n = self
            .tx
            .execute(
                r#"INSERT INTO "edfi"."StudentEducationOrganizationAssociationRace"
                   ("EducationOrganizationId", "RaceDescriptorId", "StudentUSI", "CreateDate")
                   VALUES ($1, $2, $3, $4)"#,
                &[&plan::LEA_ID, &race, &usi, &self.now],
            )
            .await?;
        self.record("StudentEducationOrganizationAssociationRace", Op::Insert, n);
        let n = self
            .tx
            .execute(
                r#"INSERT INTO "edfi"."StudentEducationOrganizationAssociationElectronicMail"
                   ("EducationOrganizationId", "ElectronicMailAddress", "ElectronicMailTypeDescriptorId",
                    "StudentUSI", "PrimaryEmailAddressIndicator", "CreateDate")
                   VALUES ($1, $2, $3, $4, true, $5)"#,
                &[
                    &plan::LEA_ID,
                    &format!("{uid}@students.achievement.example.org"),
                    &descriptors::id("ElectronicMailTypeDescriptor", "Organization"),
                    &usi,
                    &self.now,
                ],
            )
            .await?;
        self.record(
            "StudentEducationOrganizationAssociationElectronicMail",
            Op::Insert,
            n,
        );
        let entry_type = if entry == plan::first_student_day() {
            "Next year school"
        } else {
            "Original entry into a United States school"
        };
        self.insert_ssa(usi, school, grade, entry, entry_type)
            .await?;
        let sections = self.enroll_sections(usi, school, grade, entry).await?;
        anyhow::ensure!(sections > 0, "no section to enroll student {usi} in");
        Ok(true)
    }

    /// Withdrawal: the student's section associations and school associations at one school,
    /// deleted together.
    async fn withdraw(&mut self, usi: i32) -> anyhow::Result<bool> {
        let ssas = self.ssas(usi).await?;
        let Some(a) = ssas.choose(self.rng) else {
            return Ok(false);
        };
        let n = self
            .tx
            .execute(
                r#"DELETE FROM "edfi"."StudentSectionAssociation"
                   WHERE "StudentUSI" = $1 AND "SchoolId" = $2 AND "SchoolYear" = $3"#,
                &[&usi, &a.school, &SCHOOL_YEAR],
            )
            .await?;
        self.record("StudentSectionAssociation", Op::Delete, n);
        let n = self
            .tx
            .execute(
                r#"DELETE FROM "edfi"."StudentSchoolAssociation"
                   WHERE "StudentUSI" = $1 AND "SchoolId" = $2 AND "SchoolYear" = $3"#,
                &[&usi, &a.school, &SCHOOL_YEAR],
            )
            .await?;
        self.record("StudentSchoolAssociation", Op::Delete, n);
        Ok(true)
    }

    /// A primary-key update: a section association's BeginDate moves a few days.
    async fn begin_date(&mut self, usi: i32) -> anyhow::Result<bool> {
        let rows = self.sections(usi).await?;
        let Some(s) = rows.choose(self.rng) else {
            return Ok(false);
        };
        let mut shift = self.rng.gen_range(1..=5);
        if self.rng.gen_bool(0.5) {
            shift = -shift;
        }
        let new = s.begin + chrono::Duration::days(shift);
        if s.end.is_some_and(|e| new > e)
            || rows
                .iter()
                .any(|o| o.begin == new && o.section == s.section && o.session == s.session)
        {
            return Ok(false);
        }
        let n = self
            .tx
            .execute(
                r#"UPDATE "edfi"."StudentSectionAssociation" SET "BeginDate" = $7, "LastModifiedDate" = $8
                   WHERE "BeginDate" = $1 AND "LocalCourseCode" = $2 AND "SchoolId" = $3 AND "SchoolYear" = $9
                     AND "SectionIdentifier" = $4 AND "SessionName" = $5 AND "StudentUSI" = $6"#,
                &[&s.begin, &s.course, &s.school, &s.section, &s.session, &usi, &new, &self.now, &SCHOOL_YEAR],
            )
            .await?;
        self.record("StudentSectionAssociation", Op::Update, n);
        Ok(true)
    }

    /// Assessment results arriving: StudentAssessment with its items, scores and performance
    /// level.
    async fn assessment(&mut self, usi: i32, uid: &str) -> anyhow::Result<bool> {
        let ssas = self.ssas(usi).await?;
        let Some(grade) = ssas.last().and_then(|a| a.grade) else {
            return Ok(false);
        };
        let subject = self.rng.gen_range(0..SUBJECTS.len());
        let Some(list) = self.refs.assessments.get(&(subject, grade)) else {
            return Ok(false);
        };
        let (assessment, items) = list.choose(self.rng).expect("non-empty assessment list");
        let taken: BTreeSet<String> = self
            .student_assessments(usi)
            .await?
            .into_iter()
            .map(|(_, sa)| sa)
            .collect();
        let base = format!("{assessment}-{uid}");
        let identifier = std::iter::once(base.clone())
            .chain((1..).map(|k| format!("{base}-R{k}")))
            .find(|id| !taken.contains(id))
            .expect("an unused identifier");
        let administered = random_day(
            self.rng,
            plan::first_student_day(),
            plan::last_student_day(),
        )
        .and_hms_opt(self.rng.gen_range(8..15), self.rng.gen_range(0..60), 0)
        .expect("valid time");
        let n = self
            .tx
            .execute(
                r#"INSERT INTO "edfi"."StudentAssessment" ("AssessmentIdentifier", "Namespace",
                   "StudentAssessmentIdentifier", "StudentUSI", "AdministrationDate",
                   "AdministrationLanguageDescriptorId", "WhenAssessedGradeLevelDescriptorId", "SchoolYear",
                   "CreateDate", "LastModifiedDate", "Id")
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)"#,
                &[
                    assessment,
                    &ILLUMINATE_NS,
                    &identifier,
                    &usi,
                    &administered,
                    &descriptors::id("LanguageDescriptor", "eng"),
                    &descriptors::grade(grade),
                    &SCHOOL_YEAR,
                    &self.now,
                    &plan::random_uuid(self.rng),
                ],
            )
            .await?;
        self.record("StudentAssessment", Op::Insert, n);
        let ability: f64 = self.rng.gen_range(0.2..0.95);
        let mut raw = 0u32;
        let mut n = 0;
        for code in items {
            let correct = self.rng.gen_bool(ability);
            raw += u32::from(correct);
            let result = if correct { "Correct" } else { "Incorrect" };
            let response = ["A", "B", "C", "D"][self.rng.gen_range(0..4)];
            n += self
                .tx
                .execute(
                    r#"INSERT INTO "edfi"."StudentAssessmentItem" ("AssessmentIdentifier", "IdentificationCode",
                       "Namespace", "StudentAssessmentIdentifier", "StudentUSI", "AssessmentResponse",
                       "AssessmentItemResultDescriptorId", "RawScoreResult", "CreateDate")
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::numeric, $9)"#,
                    &[
                        assessment,
                        code,
                        &ILLUMINATE_NS,
                        &identifier,
                        &usi,
                        &response,
                        &descriptors::id("AssessmentItemResultDescriptor", result),
                        &u32::from(correct).to_string(),
                        &self.now,
                    ],
                )
                .await?;
        }
        self.record("StudentAssessmentItem", Op::Insert, n);
        let integer = descriptors::id("ResultDatatypeTypeDescriptor", "Integer");
        let mut n = 0;
        for (method, value) in [("Raw score", raw), ("Scale score", plan::scale_score(raw))] {
            n += self
                .tx
                .execute(
                    r#"INSERT INTO "edfi"."StudentAssessmentScoreResult" ("AssessmentIdentifier",
                       "AssessmentReportingMethodDescriptorId", "Namespace", "StudentAssessmentIdentifier",
                       "StudentUSI", "Result", "ResultDatatypeTypeDescriptorId", "CreateDate")
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
                    &[
                        assessment,
                        &descriptors::id("AssessmentReportingMethodDescriptor", method),
                        &ILLUMINATE_NS,
                        &identifier,
                        &usi,
                        &value.to_string(),
                        &integer,
                        &self.now,
                    ],
                )
                .await?;
        }
        self.record("StudentAssessmentScoreResult", Op::Insert, n);
        let level = plan::performance_level(raw);
        let n = self
            .tx
            .execute(
                r#"INSERT INTO "edfi"."StudentAssessmentPerformanceLevel" ("AssessmentIdentifier",
                   "AssessmentReportingMethodDescriptorId", "Namespace", "PerformanceLevelDescriptorId",
                   "StudentAssessmentIdentifier", "StudentUSI", "PerformanceLevelMet", "CreateDate")
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
                &[
                    assessment,
                    &descriptors::id("AssessmentReportingMethodDescriptor", "Raw score"),
                    &ILLUMINATE_NS,
                    &descriptors::id("PerformanceLevelDescriptor", level),
                    &identifier,
                    &usi,
                    &matches!(level, "Advanced" | "Proficient"),
                    &self.now,
                ],
            )
            .await?;
        self.record("StudentAssessmentPerformanceLevel", Op::Insert, n);
        Ok(true)
    }

    /// A schedule change: one section association replaced by another section of the same
    /// course and session.
    async fn section_change(&mut self, usi: i32) -> anyhow::Result<bool> {
        let rows = self.sections(usi).await?;
        let Some(s) = rows.choose(self.rng).cloned() else {
            return Ok(false);
        };
        let Some((subject, grade)) = plan::parse_local_course_code(&s.course) else {
            return Ok(false);
        };
        let Some(school) = self.refs.school(s.school) else {
            return Ok(false);
        };
        let Some(others) = school.sections.get(&(subject, grade, s.session.clone())) else {
            return Ok(false);
        };
        let others: Vec<&String> = others
            .iter()
            .filter(|o| {
                !rows
                    .iter()
                    .any(|r| &r.section == *o && r.session == s.session)
            })
            .collect();
        let Some(target) = others.choose(self.rng) else {
            return Ok(false);
        };
        let n = self
            .tx
            .execute(
                r#"DELETE FROM "edfi"."StudentSectionAssociation"
                   WHERE "BeginDate" = $1 AND "LocalCourseCode" = $2 AND "SchoolId" = $3 AND "SchoolYear" = $7
                     AND "SectionIdentifier" = $4 AND "SessionName" = $5 AND "StudentUSI" = $6"#,
                &[&s.begin, &s.course, &s.school, &s.section, &s.session, &usi, &SCHOOL_YEAR],
            )
            .await?;
        self.record("StudentSectionAssociation", Op::Delete, n);
        let n = self
            .tx
            .execute(
                r#"INSERT INTO "edfi"."StudentSectionAssociation"
                   ("BeginDate", "LocalCourseCode", "SchoolId", "SchoolYear", "SectionIdentifier",
                    "SessionName", "StudentUSI", "EndDate", "HomeroomIndicator",
                    "CreateDate", "LastModifiedDate", "Id")
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, false, $9, $9, $10)"#,
                &[
                    &s.begin,
                    &s.course,
                    &s.school,
                    &SCHOOL_YEAR,
                    *target,
                    &s.session,
                    &usi,
                    &s.end,
                    &self.now,
                    &plan::random_uuid(self.rng),
                ],
            )
            .await?;
        self.record("StudentSectionAssociation", Op::Insert, n);
        Ok(true)
    }

    async fn delete_assessment(&mut self, usi: i32) -> anyhow::Result<bool> {
        let taken = self.student_assessments(usi).await?;
        let Some((assessment, sa)) = taken.choose(self.rng) else {
            return Ok(false);
        };
        for table in [
            "StudentAssessmentItem",
            "StudentAssessmentScoreResult",
            "StudentAssessmentPerformanceLevel",
            "StudentAssessment",
        ] {
            let n = self
                .tx
                .execute(
                    &format!(
                        r#"DELETE FROM "edfi"."{table}" WHERE "AssessmentIdentifier" = $1 AND "Namespace" = $2
                           AND "StudentAssessmentIdentifier" = $3 AND "StudentUSI" = $4"#
                    ),
                    &[assessment, &ILLUMINATE_NS, sa, &usi],
                )
                .await?;
            self.record(table, Op::Delete, n);
        }
        Ok(true)
    }

    /// A transfer: the school association at one school ends (exit date, section associations
    /// end), a new one starts at another school of the same grades, with its sections.
    async fn transfer(&mut self, usi: i32) -> anyhow::Result<bool> {
        let ssas = self.ssas(usi).await?;
        let active: Vec<&Ssa> = ssas.iter().filter(|a| a.exit.is_none()).collect();
        let Some(a) = active.choose(self.rng) else {
            return Ok(false);
        };
        let Some(grade) = a.grade else {
            return Ok(false);
        };
        let targets: Vec<&SchoolRef> = self
            .refs
            .schools
            .iter()
            .filter(|s| s.id != a.school && s.grades.contains(&grade))
            .collect();
        let Some(target) = targets.choose(self.rng) else {
            return Ok(false);
        };
        let last = plan::date(2025, 5, 30);
        if a.entry >= last {
            return Ok(false);
        }
        let exit = random_day(self.rng, a.entry + chrono::Duration::days(1), last);
        let entry = exit + chrono::Duration::days(1);
        if ssas
            .iter()
            .any(|o| o.school == target.id && o.entry == entry)
        {
            return Ok(false);
        }
        let n = self
            .tx
            .execute(
                r#"UPDATE "edfi"."StudentSchoolAssociation"
                   SET "ExitWithdrawDate" = $4, "ExitWithdrawTypeDescriptorId" = $5, "LastModifiedDate" = $6
                   WHERE "EntryDate" = $1 AND "SchoolId" = $2 AND "StudentUSI" = $3"#,
                &[
                    &a.entry,
                    &a.school,
                    &usi,
                    &exit,
                    &descriptors::id("ExitWithdrawTypeDescriptor", "Transferred"),
                    &self.now,
                ],
            )
            .await?;
        self.record("StudentSchoolAssociation", Op::Update, n);
        let n = self
            .tx
            .execute(
                r#"UPDATE "edfi"."StudentSectionAssociation" SET "EndDate" = $3, "LastModifiedDate" = $4
                   WHERE "StudentUSI" = $1 AND "SchoolId" = $2 AND "SchoolYear" = $5 AND "BeginDate" <= $3
                     AND ("EndDate" IS NULL OR "EndDate" > $3)"#,
                &[&usi, &a.school, &exit, &self.now, &SCHOOL_YEAR],
            )
            .await?;
        self.record("StudentSectionAssociation", Op::Update, n);
        self.insert_ssa(usi, target, grade, entry, "Transfer from a public school")
            .await?;
        let sections = self.enroll_sections(usi, target, grade, entry).await?;
        anyhow::ensure!(sections > 0, "no section to transfer student {usi} into");
        Ok(true)
    }

    async fn staff(&mut self) -> anyhow::Result<bool> {
        if self.refs.max_staff == 0 {
            return Ok(false);
        }
        let usi = self.rng.gen_range(1..=self.refs.max_staff);
        let last = plan::random_last_name(self.rng).0;
        let n = self
            .tx
            .execute(
                r#"UPDATE "edfi"."Staff" SET "LastSurname" = $2, "LastModifiedDate" = $3 WHERE "StaffUSI" = $1"#,
                &[&usi, &last, &self.now],
            )
            .await?;
        self.record("Staff", Op::Update, n);
        Ok(n > 0)
    }

    /// A calendar change at one school: an instructional day becomes a weather day or back.
    async fn calendar(&mut self) -> anyhow::Result<bool> {
        let school = self.refs.schools.choose(self.rng).expect("schools");
        let dates = plan::calendar_dates();
        let (day, _) = *dates.choose(self.rng).expect("calendar dates");
        let locked = self
            .tx
            .query_opt(
                r#"SELECT 1 FROM "edfi"."CalendarDate" WHERE "CalendarCode" = $1 AND "Date" = $2
                   AND "SchoolId" = $3 AND "SchoolYear" = $4 FOR UPDATE"#,
                &[&school.calendar_code, &day, &school.id, &SCHOOL_YEAR],
            )
            .await?;
        if locked.is_none() {
            return Ok(false);
        }
        let instructional = descriptors::id("CalendarEventDescriptor", "Instructional day");
        let weather = descriptors::id("CalendarEventDescriptor", "Weather day");
        let events: Vec<i32> = self
            .tx
            .query(
                r#"SELECT "CalendarEventDescriptorId" FROM "edfi"."CalendarDateCalendarEvent"
                   WHERE "CalendarCode" = $1 AND "Date" = $2 AND "SchoolId" = $3 AND "SchoolYear" = $4
                   ORDER BY 1"#,
                &[&school.calendar_code, &day, &school.id, &SCHOOL_YEAR],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (from, to) = if events.contains(&instructional) {
            (instructional, weather)
        } else if events.contains(&weather) {
            (weather, instructional)
        } else {
            return Ok(false);
        };
        let key =
            r#""CalendarCode" = $1 AND "Date" = $2 AND "SchoolId" = $3 AND "SchoolYear" = $4"#;
        let n = self
            .tx
            .execute(
                &format!(
                    r#"DELETE FROM "edfi"."CalendarDateCalendarEvent" WHERE {key} AND "CalendarEventDescriptorId" = $5"#
                ),
                &[&school.calendar_code, &day, &school.id, &SCHOOL_YEAR, &from],
            )
            .await?;
        self.record("CalendarDateCalendarEvent", Op::Delete, n);
        let n = self
            .tx
            .execute(
                r#"INSERT INTO "edfi"."CalendarDateCalendarEvent"
                   ("CalendarCode", "CalendarEventDescriptorId", "Date", "SchoolId", "SchoolYear", "CreateDate")
                   VALUES ($1, $5, $2, $3, $4, $6)"#,
                &[&school.calendar_code, &day, &school.id, &SCHOOL_YEAR, &to, &self.now],
            )
            .await?;
        self.record("CalendarDateCalendarEvent", Op::Insert, n);
        let n = self
            .tx
            .execute(
                &format!(r#"UPDATE "edfi"."CalendarDate" SET "LastModifiedDate" = $5 WHERE {key}"#),
                &[
                    &school.calendar_code,
                    &day,
                    &school.id,
                    &SCHOOL_YEAR,
                    &self.now,
                ],
            )
            .await?;
        self.record("CalendarDate", Op::Update, n);
        Ok(true)
    }
}
