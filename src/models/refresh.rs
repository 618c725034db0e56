//! A refresh in the flush's transaction: every model an input of which changed is rebuilt,
//! whole or for the students (`-- incremental:`) or other keys (`-- refresh_by:`) the
//! flush's rows carry; rows of closed school years stay (`-- history:`).

use super::*;

/// Temporary table of the students a flush touched (`studentusi`, `studentuniqueid`), while
/// incremental models refresh.
const STUDENTS: &str = "edfi_cdc_changed_students";

/// Temporary tables (`_0`, `_1`, …) of the students of some of the flush's changed student
/// tables: those whose rows changed in an incremental model's changed inputs (and in the ones
/// of the models it follows), when that is not every changed student table. A model whose
/// inputs changed for few of the flush's students refreshes those only.
const SOME_STUDENTS: &str = "edfi_cdc_some_students";

/// Temporary table of the students one incremental model refreshes: those of its changed
/// inputs, and those its `-- students_of:` lines find for its changed inputs without students.
const MODEL_STUDENTS: &str = "edfi_cdc_model_students";

/// Temporary table of the `studentusi` values a model's `-- students_of:` lines found.
const FOUND: &str = "edfi_cdc_found_students";

/// Temporary table of the values (`k`) of a `-- refresh_by:` model's column that one refresh
/// rebuilds.
const MODEL_KEYS: &str = "edfi_cdc_model_keys";

/// Temporary tables (`_0`, `_1`, …) of the refreshed students' rows of one incremental model's
/// student inputs, on PostgreSQL.
const ROWS: &str = "edfi_cdc_student_rows";

/// Temporary tables (`_0`, `_1`, …) of a student input's rows of the flush's students, or of
/// those of some of its tables ([`SOME_STUDENTS`]), on PostgreSQL: copied once per flush for
/// every incremental model refreshed for those students.
const FLUSH_ROWS: &str = "edfi_cdc_flush_rows";

/// Temporary table of a history model's rows of closed school years, while it is rebuilt whole.
const KEPT: &str = "edfi_cdc_kept";

/// Temporary tables (`_0`, `_1`, …) of the rows a model's refresh changed — its rows that went
/// and those that came — for the `-- students_of: <model>` lines of the models reading it.
const CHANGES: &str = "edfi_cdc_model_changes";

/// Temporary tables of an incremental refresh ([`Models::replace_rows`]): the rows its
/// `SELECT` gives, the model's rows they replace, and the keys of those to delete.
const FRESH: &str = "edfi_cdc_fresh";
const OLD: &str = "edfi_cdc_old";
const GONE: &str = "edfi_cdc_gone";

impl Models {
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
        self.refresh_batch(tx, &all, &HashSet::new(), version, commit_time)
            .await
    }

    /// [`Models::refresh`] for a flush that knows the rows it changed: `changed` maps each
    /// changed table to how it changed. An incremental model whose changed inputs were all
    /// merged, each either with students or named by a `-- students_of:` line, is refreshed for
    /// the affected students only (and, when students were deleted, rid of rows of students
    /// that no longer exist); every other affected model is rebuilt.
    ///
    /// A model that reads a table in `loading` (being snapshotted: its target is empty or
    /// about to be replaced), or a model waiting so, waits: it keeps its rows and freshness
    /// until the flush that publishes the last of them, which rebuilds it whole. An initial
    /// load so builds each model once rather than at every flush.
    ///
    /// A value the target refuses as invalid for a type (a number too large for a model's
    /// `decimal`, say) fails the refresh naming the model.
    pub async fn refresh_batch(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        changed: &HashMap<String, Changed>,
        loading: &HashSet<String>,
        version: i64,
        commit_time: Option<DateTime<Utc>>,
    ) -> Result<Vec<Refreshed>, RefreshError> {
        let mut current = None;
        self.refresh_models(tx, changed, loading, version, commit_time, &mut current)
            .await
            .map_err(|e| match (e, current) {
                (RefreshError::Database(e), Some(model)) if data_exception(&e) => {
                    let db = e.as_db_error().expect("checked");
                    RefreshError::Rejected(format!(
                        "reporting model {model}: {} ({}): a value its SELECT computes does not \
                         fit the model's column; nothing of the flush was applied. Widen the \
                         column in the model or correct the source row, then restart",
                        db.message(),
                        db.code().code()
                    ))
                }
                (e, _) => e,
            })
    }

    /// [`Models::refresh_batch`], with `current` naming the model being refreshed.
    async fn refresh_models<'m>(
        &'m self,
        tx: &tokio_postgres::Transaction<'_>,
        changed: &HashMap<String, Changed>,
        loading: &HashSet<String>,
        version: i64,
        commit_time: Option<DateTime<Utc>>,
        current: &mut Option<&'m str>,
    ) -> Result<Vec<Refreshed>, RefreshError> {
        let mut done: Vec<Refreshed> = Vec::new();
        let mut waiting: HashSet<&str> = HashSet::new();
        // Models refreshed for more students than the flush's (`-- students_of:`): a model
        // reading one cannot follow it by the flush's students alone.
        let mut widened: HashSet<&str> = HashSet::new();
        // Models without students refreshed because of their changed inputs alone (merged, no
        // refreshed upstream, custom input or new definition): those inputs.
        let mut caused_by: HashMap<&str, Vec<&String>> = HashMap::new();
        let mut students_ready = false;
        // (student input, students' table) → its copy of their rows (`FLUSH_ROWS`).
        let mut flush_rows: HashMap<(String, String), String> = HashMap::new();
        // Changed student tables → the table of their students (`STUDENTS` for all of them).
        let mut student_sets: HashMap<BTreeSet<String>, String> = HashMap::new();
        // Models refreshed for the students of some changed student tables (not widened by
        // `-- students_of:` lines): those tables, which a model reading them follows.
        let mut refreshed_for: HashMap<&str, BTreeSet<String>> = HashMap::new();
        // Models whose changed rows a model reading them maps to students (`-- students_of:
        // <model>`), and the table of those rows once such a model was refreshed.
        let diffed: HashSet<&str> = self
            .models
            .iter()
            .flat_map(|m| m.students_of.iter().map(|(t, _)| t.as_str()))
            .filter(|t| self.models.iter().any(|u| u.name == *t))
            .collect();
        let mut changes: HashMap<String, String> = HashMap::new();
        if self.postgres {
            tx.batch_execute("SET LOCAL enable_nestloop = off").await?;
        }
        let custom = CustomState::read(tx, &self.models).await?;
        let input = self.input_schema();
        for m in &self.models {
            *current = Some(m.name.as_str());
            if m.inputs.iter().any(|i| loading.contains(i))
                || m.upstream.iter().any(|u| waiting.contains(u.as_str()))
            {
                waiting.insert(m.name.as_str());
                continue;
            }
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
            // A model reading a model rebuilt whole (or by key, or for more students than the
            // flush's) is rebuilt whole; one reading models refreshed for the flush's students
            // can follow them. So can an incremental model that maps the rows an upstream
            // model's refresh changed to students (`-- students_of: ids.section`), and one
            // reading a model without students that was refreshed for its own merged inputs
            // alone (`schedule.calendaraggregate` for changed calendar dates): those inputs are
            // taken as its own changed inputs, which it must map to students. A changed custom
            // input is not tracked by student, and a changed definition may change every row:
            // the model is rebuilt whole.
            let mut upstream_full = custom_changed || redefined;
            let mut borrowed: Vec<&String> = Vec::new();
            // (upstream model, the table of the rows its refresh changed) mapped to students.
            let mut followed: Vec<(&String, String)> = Vec::new();
            for d in &refreshed_upstream {
                let line = m.students_of.iter().find(|(t, _)| *t == d.model);
                if let (Some((t, _)), Some(rows)) = (line, changes.get(&d.model)) {
                    if m.incremental.is_some() {
                        followed.push((t, rows.clone()));
                        continue;
                    }
                }
                if d.incremental && !widened.contains(d.model.as_str()) {
                    continue;
                }
                match caused_by.get(d.model.as_str()) {
                    Some(theirs) if m.incremental.is_some() => {
                        for i in theirs {
                            if !inputs.contains(i) && !borrowed.contains(i) {
                                borrowed.push(*i);
                            }
                        }
                    }
                    _ => upstream_full = true,
                }
            }
            let stand_ins = custom.stand_ins(m);
            let started = Instant::now();
            let merged = inputs
                .iter()
                .all(|i| matches!(changed[*i], Changed::Merged { .. }));
            // Where this refresh leaves the rows it changed, when a model reading it wants them:
            // not after a snapshot of an input was published (an initial load changes every row;
            // the models reading it are rebuilt whole then) or a new definition.
            let keep_changes = (diffed.contains(m.name.as_str()) && merged && !redefined)
                .then(|| format!("{CHANGES}_{}", changes.len()));
            // The changed inputs' flush rows: each merged table with students, or one a
            // `-- students_of:` line maps to students (`None`: the model is rebuilt whole).
            let mapped: Option<Vec<(&String, &String, bool)>> = inputs
                .iter()
                .chain(&borrowed)
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
                .chain(followed.iter().map(|(t, rows)| Some((*t, rows, false))))
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
                            self.refresh_by_key(
                                tx,
                                m,
                                by,
                                &stages,
                                &custom.ctes(m, &stand_ins),
                                keep_changes.as_deref(),
                            )
                            .await?
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            let mut refreshed_students = None;
            let (rows, truncated, kept, incremental) = match (keyed, &m.incremental, mapped) {
                (Some((written, truncated, kept)), _, _) => {
                    // A model reading this one cannot follow it by the flush's students.
                    widened.insert(m.name.as_str());
                    (written, truncated, kept, true)
                }
                (None, Some(col), Some(mapped)) if !upstream_full => {
                    if !students_ready {
                        let all: BTreeSet<String> = changed
                            .iter()
                            .filter(|(_, c)| matches!(c, Changed::Merged { students: true, .. }))
                            .map(|(t, _)| t.clone())
                            .collect();
                        let union = studentusi_of(changed, &all);
                        tx.batch_execute(&format!(
                            "CREATE TEMP TABLE {STUDENTS} (studentusi integer, studentuniqueid varchar(65535))"
                        ))
                        .await?;
                        if !union.is_empty() {
                            by_index(
                                tx,
                                self.postgres,
                                &format!(
                                    "INSERT INTO {STUDENTS} SELECT DISTINCT studentusi, studentuniqueid \
                                     FROM {input}.student WHERE {}",
                                    among(self.postgres, "studentusi", &union.join(" UNION "))
                                ),
                            )
                            .await?;
                        }
                        analyze(tx, self.postgres, STUDENTS).await?;
                        students_ready = true;
                        student_sets.insert(all, STUDENTS.to_string());
                    }
                    // The students whose rows changed in the model's changed student inputs and
                    // in those of the models it follows: its rows of other students stay as
                    // they are.
                    let mut tables: BTreeSet<String> = mapped
                        .iter()
                        .filter(|(_, _, students)| *students)
                        .map(|(t, _, _)| t.to_string())
                        .collect();
                    for d in &refreshed_upstream {
                        if let Some(theirs) = refreshed_for.get(d.model.as_str()) {
                            tables.extend(theirs.iter().cloned());
                        }
                    }
                    let base = match student_sets.get(&tables) {
                        Some(set) => set.clone(),
                        None => {
                            let set = format!("{SOME_STUDENTS}_{}", student_sets.len());
                            let stages = studentusi_of(changed, &tables);
                            let filter = if stages.is_empty() {
                                "1 = 0".to_string()
                            } else {
                                format!("studentusi IN ({})", stages.join(" UNION "))
                            };
                            tx.batch_execute(&format!(
                                "CREATE TEMP TABLE {set} AS SELECT studentusi, studentuniqueid \
                                 FROM {STUDENTS} WHERE {filter}"
                            ))
                            .await?;
                            analyze(tx, self.postgres, &set).await?;
                            student_sets.insert(tables.clone(), set.clone());
                            set
                        }
                    };
                    // The model's students: those, and those its mapped inputs affect.
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
                        base.as_str()
                    } else {
                        // The lines run as written (they may read whole tables); the students
                        // they find are then looked up by index.
                        tx.batch_execute(&format!(
                            "CREATE TEMP TABLE {FOUND} AS {}",
                            finds.join(" UNION ")
                        ))
                        .await?;
                        by_index(
                            tx,
                            self.postgres,
                            &format!(
                                "CREATE TEMP TABLE {MODEL_STUDENTS} AS \
                                 SELECT studentusi, studentuniqueid FROM {base} UNION \
                                 SELECT s.studentusi, s.studentuniqueid FROM {input}.student s \
                                 WHERE {}",
                                among(
                                    self.postgres,
                                    "s.studentusi",
                                    &format!("SELECT * FROM {FOUND}")
                                )
                            ),
                        )
                        .await?;
                        tx.batch_execute(&format!("DROP TABLE {FOUND}")).await?;
                        // The lines found no one else (a changed row that moves no student's
                        // rows): refreshed for its changed inputs' students, as if none.
                        let more = any_row(
                            tx,
                            &format!(
                                "SELECT 1 FROM {MODEL_STUDENTS} m WHERE NOT EXISTS \
                                 (SELECT 1 FROM {base} s WHERE s.studentusi = m.studentusi)"
                            ),
                        )
                        .await?;
                        if more {
                            analyze(tx, self.postgres, MODEL_STUDENTS).await?;
                            MODEL_STUDENTS
                        } else {
                            tx.batch_execute(&format!("DROP TABLE {MODEL_STUDENTS}"))
                                .await?;
                            base.as_str()
                        }
                    };
                    let students = format!("SELECT studentuniqueid FROM {set}");
                    // Only those students' rows of the student tables are read, and of the
                    // student models it reads: they were refreshed for them (a model refreshed
                    // otherwise rebuilds this one whole).
                    let mut ctes = custom.ctes(m, &stand_ins);
                    // (name, rows, whether an input table: the same for every model refreshed
                    // for the flush's students, unlike an upstream model's rows).
                    let mut reads: Vec<(String, String, bool)> = m
                        .inputs
                        .iter()
                        .filter(|t| self.student_tables.contains(*t))
                        .map(|t| {
                            let table = t.split_once('.').map_or(t.as_str(), |(_, n)| n);
                            (
                                format!("{input}.{table}"),
                                format!(
                                    "SELECT * FROM {input}.{table} WHERE {}",
                                    among(
                                        self.postgres,
                                        "studentusi",
                                        &format!("SELECT studentusi FROM {set}")
                                    )
                                ),
                                true,
                            )
                        })
                        .collect();
                    for u in self.models.iter().filter(|u| m.upstream.contains(&u.name)) {
                        if let Some(ucol) = &u.incremental {
                            reads.push((
                                u.name.clone(),
                                format!(
                                    "SELECT * FROM {} WHERE {}",
                                    u.target(),
                                    among(self.postgres, &quote(ucol), &students)
                                ),
                                false,
                            ));
                        }
                    }
                    // On PostgreSQL, copied out first by index lookups (the SELECT's hash joins
                    // would read each table whole for them); an input table's copy for a table
                    // of students serves every model refreshed for them.
                    let mut copies = Vec::new();
                    for (name, sql, input_table) in reads {
                        if !self.postgres {
                            ctes.push((name, sql));
                            continue;
                        }
                        let shared = input_table && set != MODEL_STUDENTS;
                        let copy_key = (name.clone(), set.to_string());
                        if let Some(copy) = flush_rows.get(&copy_key).filter(|_| shared) {
                            ctes.push((name, format!("SELECT * FROM {copy}")));
                            continue;
                        }
                        let copy = if shared {
                            format!("{FLUSH_ROWS}_{}", flush_rows.len())
                        } else {
                            format!("{ROWS}_{}", copies.len())
                        };
                        by_index(tx, true, &format!("CREATE TEMP TABLE {copy} AS {sql}")).await?;
                        analyze(tx, self.postgres, &copy).await?;
                        ctes.push((name.clone(), format!("SELECT * FROM {copy}")));
                        if shared {
                            flush_rows.insert(copy_key, copy);
                        } else {
                            copies.push(copy);
                        }
                    }
                    let select = m.select_with(&ctes);
                    let c = quote(col);
                    let only = Only::Among(&c, &students);
                    // Students deleted by the flush: their rows go from every incremental model,
                    // also one that reads them only through an upstream model.
                    let student_stage = match changed.get(&format!("{INPUT_SCHEMA}.student")) {
                        Some(Changed::Merged { stage, .. }) => Some(stage),
                        _ => None,
                    };
                    if let Some(stage) = student_stage {
                        let gone = any_row(
                            tx,
                            &format!("SELECT 1 FROM {stage} WHERE edfi_cdc_op = 'd'"),
                        )
                        .await?;
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
                    let (written, truncated, kept) = self
                        .replace_rows(tx, m, input, &select, only, keep_changes.as_deref())
                        .await?;
                    let n: i64 = tx
                        .query_one(&format!("SELECT COUNT(*) FROM {set}"), &[])
                        .await?
                        .get(0);
                    refreshed_students = Some(n as u64);
                    for copy in copies {
                        tx.batch_execute(&format!("DROP TABLE {copy}")).await?;
                    }
                    if set == MODEL_STUDENTS {
                        tx.batch_execute(&format!("DROP TABLE {MODEL_STUDENTS}"))
                            .await?;
                        widened.insert(m.name.as_str());
                    } else {
                        refreshed_for.insert(m.name.as_str(), tables);
                    }
                    (written, truncated, kept, true)
                }
                _ if keep_changes.is_some() => {
                    // A model whose changed rows models reading it map to students: rebuilt
                    // whole, but written as a difference, which leaves those rows.
                    let select = m.select_with(&custom.ctes(m, &stand_ins));
                    let (written, truncated, kept) = self
                        .replace_rows(tx, m, input, &select, Only::All, keep_changes.as_deref())
                        .await?;
                    (written, truncated, kept, false)
                }
                _ => {
                    let select = m.select_with(&custom.ctes(m, &stand_ins));
                    // A new definition may give the same rows other keys: keeping the closed
                    // years' old rows would duplicate them.
                    if !redefined {
                        keep_closed(tx, m, input, self.postgres).await?;
                    }
                    tx.execute(&format!("DELETE FROM {}", m.target()), &[])
                        .await?;
                    // On PostgreSQL a student model's rows in student order, as the sink
                    // publishes its student tables: a later refresh reads a flush's students'
                    // rows through the index on the column, from few pages.
                    let order = m
                        .incremental
                        .as_ref()
                        .filter(|_| self.postgres)
                        .map(|c| format!("ORDER BY {}", quote(c)));
                    let (inserted, truncated) = self
                        .insert(tx, m, &m.target(), &select, order.as_deref())
                        .await?;
                    analyze(tx, self.postgres, &m.target()).await?;
                    let kept = if redefined {
                        0
                    } else {
                        restore_closed(tx, m, self.postgres).await?
                    };
                    (inserted, truncated, kept, false)
                }
            };
            if m.incremental.is_none()
                && merged
                && refreshed_upstream.is_empty()
                && !custom_changed
                && !redefined
            {
                caused_by.insert(m.name.as_str(), inputs);
            }
            if let Some(rows) = keep_changes {
                changes.insert(m.name.clone(), rows);
            }
            custom.record(tx, m).await?;
            done.push(Refreshed {
                model: m.name.clone(),
                rows,
                seconds: started.elapsed().as_secs_f64(),
                incremental,
                students: refreshed_students,
                truncated,
                kept,
            });
        }
        *current = None;
        for copy in flush_rows.values().chain(changes.values()) {
            tx.batch_execute(&format!("DROP TABLE {copy}")).await?;
        }
        for set in student_sets.values().filter(|s| *s != STUDENTS) {
            tx.batch_execute(&format!("DROP TABLE {set}")).await?;
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
    /// its changed inputs (`stages`), reading its listed inputs narrowed to them: its rows of
    /// those values become what its `SELECT` gives ([`Models::replace_rows`], leaving the rows
    /// it changed in `changes` if given). `None` (nothing done) when a changed row carries no
    /// value: the model is then rebuilt whole.
    async fn refresh_by_key(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        m: &Model,
        by: &RefreshBy,
        stages: &[&String],
        custom_ctes: &[(String, String)],
        changes: Option<&str>,
    ) -> Result<Option<(u64, u64, u64)>, RefreshError> {
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
        analyze(tx, self.postgres, MODEL_KEYS).await?;
        let unknown = any_row(tx, &format!("SELECT 1 FROM {MODEL_KEYS} WHERE k IS NULL")).await?;
        if unknown {
            tx.batch_execute(&format!("DROP TABLE {MODEL_KEYS}"))
                .await?;
            return Ok(None);
        }
        let input = self.input_schema();
        let keys = format!("SELECT k FROM {MODEL_KEYS}");
        let mut ctes = custom_ctes.to_vec();
        for t in &by.inputs {
            let table = t.split_once('.').map_or(t.as_str(), |(_, n)| n);
            ctes.push((
                format!("{input}.{table}"),
                format!("SELECT * FROM {input}.{table} WHERE {key} IN ({keys})"),
            ));
        }
        let select = m.select_with(&ctes);
        let column = quote(&by.column);
        let done = self
            .replace_rows(tx, m, input, &select, Only::Among(&column, &keys), changes)
            .await?;
        tx.batch_execute(&format!("DROP TABLE {MODEL_KEYS}"))
            .await?;
        Ok(Some(done))
    }

    /// Make `m`'s rows that `only` names those `select` gives, writing only the difference:
    /// the new rows go to a temporary table like the model's (values cut as the model says),
    /// its current rows of `only` to another; rows that are not exactly among the new ones are
    /// deleted by key — except, with `-- history:`, rows of closed school years whose key the
    /// `SELECT` no longer gives — and new rows that are not exactly among the current ones are
    /// inserted. Most rows of the students or keys a flush touches come out as they were (at
    /// 1,000,000 students a flush's 30,000 students own about 250,000 roster rows): they are
    /// read, not written again. With `changes`, a temporary table of that name is left holding
    /// the rows that changed: the old rows that are not among the new ones and the new rows
    /// that are not among the old. Returns (rows written, values cut, closed rows kept).
    async fn replace_rows(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        m: &Model,
        input: &str,
        select: &str,
        only: Only<'_>,
        changes: Option<&str>,
    ) -> Result<(u64, u64, u64), RefreshError> {
        let target = m.target();
        let cols = m.column_list();
        tx.batch_execute(&format!("CREATE TEMP TABLE {FRESH} (LIKE {target})"))
            .await?;
        let filter = match only {
            Only::All => "1 = 1".to_string(),
            Only::Among(column, set) => format!("{column} IN ({set})"),
        };
        let (_, truncated) = self
            .insert(tx, m, FRESH, select, Some(&format!("WHERE {filter}")))
            .await?;
        analyze(tx, self.postgres, FRESH).await?;
        let old = format!("CREATE TEMP TABLE {OLD} AS SELECT {cols} FROM {target}");
        match only {
            Only::All => tx.execute(&old, &[]).await?,
            Only::Among(column, set) => {
                let lookup = among(self.postgres, column, set);
                by_index(tx, self.postgres, &format!("{old} WHERE {lookup}")).await?
            }
        };
        analyze(tx, self.postgres, OLD).await?;
        // A closed year's row whose key the SELECT no longer gives stays.
        let gone_again = format!(
            "NOT EXISTS (SELECT 1 FROM {FRESH} WHERE {})",
            m.same_key(FRESH, OLD)
        );
        let closed = m.closed_sql(&format!("{OLD}."), input);
        let keep = closed.as_ref().map_or(String::new(), |c| {
            format!(" WHERE NOT COALESCE({c} AND {gone_again}, false)")
        });
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE {GONE} AS SELECT {keys} FROM ({went}) {OLD}{keep}",
            keys = m.key_list(),
            went = m.only_in(OLD, FRESH),
        ))
        .await?;
        analyze(tx, self.postgres, GONE).await?;
        by_lookup(
            tx,
            self.postgres,
            &format!(
                "DELETE FROM {target} USING {GONE} WHERE {}",
                m.same_key(&target, GONE)
            ),
        )
        .await?;
        let written = tx
            .execute(
                &format!("INSERT INTO {target} ({cols}) {}", m.only_in(FRESH, OLD)),
                &[],
            )
            .await?;
        let kept = match &closed {
            Some(c) => {
                let n: i64 = tx
                    .query_one(
                        &format!("SELECT COUNT(*) FROM {OLD} WHERE {c} AND {gone_again}"),
                        &[],
                    )
                    .await?
                    .get(0);
                n as u64
            }
            None => 0,
        };
        if let Some(changes) = changes {
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE {changes} AS {} UNION ALL {}",
                m.only_in(OLD, FRESH),
                m.only_in(FRESH, OLD)
            ))
            .await?;
            analyze(tx, self.postgres, changes).await?;
        }
        tx.batch_execute(&format!("DROP TABLE {FRESH}, {OLD}, {GONE}"))
            .await?;
        Ok((written, truncated, kept))
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

/// Whether `select` returns a row (it is run with `LIMIT 1`).
async fn any_row(
    tx: &tokio_postgres::Transaction<'_>,
    select: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(tx
        .query_opt(&format!("{select} LIMIT 1"), &[])
        .await?
        .is_some())
}

/// Empty CTEs of the declared columns and types, named by the tables they stand in for.
pub(super) fn stand_in_ctes(stand_ins: &[(&str, &[Column])]) -> Vec<(String, String)> {
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

/// For a model with `-- history:` rebuilt whole: copy its rows of closed school years aside
/// before its rows are deleted.
async fn keep_closed(
    tx: &tokio_postgres::Transaction<'_>,
    m: &Model,
    input: &str,
    postgres: bool,
) -> Result<(), tokio_postgres::Error> {
    let Some(closed) = m.closed_sql("t.", input) else {
        return Ok(());
    };
    let keep = format!(
        "CREATE TEMP TABLE {KEPT} AS SELECT * FROM {} t WHERE {closed}",
        m.target()
    );
    by_lookup(tx, postgres, &keep).await?;
    analyze(tx, postgres, KEPT).await
}

/// Put back the rows [`keep_closed`] set aside that the `SELECT` did not produce again (by key);
/// returns how many.
async fn restore_closed(
    tx: &tokio_postgres::Transaction<'_>,
    m: &Model,
    postgres: bool,
) -> Result<u64, tokio_postgres::Error> {
    if m.history.is_none() {
        return Ok(0);
    }
    let restore = format!(
        "INSERT INTO {target} ({cols}) SELECT {cols} FROM {KEPT} k \
         WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {same})",
        target = m.target(),
        cols = m.column_list(),
        same = m.same_key("t", "k"),
    );
    let n = by_lookup(tx, postgres, &restore).await?;
    tx.batch_execute(&format!("DROP TABLE {KEPT}")).await?;
    Ok(n)
}

/// Which of a model's rows a refresh replaces ([`Models::replace_rows`]).
#[derive(Clone, Copy)]
enum Only<'a> {
    /// All of them (a model rebuilt whole, written as a difference).
    All,
    /// Those whose `column` (quoted) is among the values the query `set` gives.
    Among(&'a str, &'a str),
}

/// `column` is among the values the one-column query `set` gives. On PostgreSQL as an array
/// that the index on the column is scanned for, in the array's order: a flush's students' rows
/// are then read from their pages alone, where a semi-join reads the whole table (the
/// 1,000,000-student stand-in: 46,000 students' rows of `StudentSectionAssociation` in 0.34 s
/// against 2.0 s, and no slower for every student). Only in a statement run [`by_index`], on
/// a `column` that is indexed (every student table's `studentusi` and a model's
/// `-- incremental:` and `-- refresh_by:` columns are).
fn among(postgres: bool, column: &str, set: &str) -> String {
    if postgres {
        format!("{column} = ANY(ARRAY({set}))")
    } else {
        format!("{column} IN ({set})")
    }
}

/// Run `sql`, on PostgreSQL with nested loops allowed (the refresh turns them off): a
/// statement that finds few rows of a stored table by an indexed column — the refreshed
/// students' or keys' rows of a model, a student's row, a kept row by key — is then a nested
/// loop over the index rather than a hash join over the whole table; for many rows PostgreSQL
/// still hashes. Only for these statements: a model's own `SELECT` keeps the hash joins.
async fn by_lookup(
    tx: &tokio_postgres::Transaction<'_>,
    postgres: bool,
    sql: &str,
) -> Result<u64, tokio_postgres::Error> {
    if postgres {
        tx.batch_execute("SET LOCAL enable_nestloop = on").await?;
    }
    let n = tx.execute(sql, &[]).await?;
    if postgres {
        tx.batch_execute("SET LOCAL enable_nestloop = off").await?;
    }
    Ok(n)
}

/// Run `sql`, whose rows [`among`] finds, as [`by_lookup`] does and, on PostgreSQL, with
/// sequential scans off: PostgreSQL estimates `= ANY` over an array it has yet to compute at a
/// few rows and may still choose to read a table whole (one never analyzed, say), testing every
/// row against each element of the array in turn — minutes for one statement at 1,000,000
/// students. The column's index makes the scan by index the one plan left.
async fn by_index(
    tx: &tokio_postgres::Transaction<'_>,
    postgres: bool,
    sql: &str,
) -> Result<u64, tokio_postgres::Error> {
    if postgres {
        tx.batch_execute("SET LOCAL enable_seqscan = off").await?;
    }
    let n = by_lookup(tx, postgres, sql).await?;
    if postgres {
        tx.batch_execute("SET LOCAL enable_seqscan TO DEFAULT")
            .await?;
    }
    Ok(n)
}

/// On PostgreSQL, statistics of a table the refresh just filled (a temporary table of
/// students, keys or kept rows, a model rebuilt whole): the statements after it are planned
/// with them (a table never analyzed is planned from its size alone).
async fn analyze(
    tx: &tokio_postgres::Transaction<'_>,
    postgres: bool,
    table: &str,
) -> Result<(), tokio_postgres::Error> {
    if postgres {
        tx.batch_execute(&format!("ANALYZE {table}")).await?;
    }
    Ok(())
}

/// A data exception (SQLSTATE class 22: a number out of range, a value invalid for its type),
/// which no retry changes.
fn data_exception(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code().starts_with("22"))
}

/// `SELECT studentusi FROM <stage>` for each of `tables` the flush merged.
fn studentusi_of(changed: &HashMap<String, Changed>, tables: &BTreeSet<String>) -> Vec<String> {
    tables
        .iter()
        .filter_map(|t| match &changed[t] {
            Changed::Merged { stage, .. } => Some(format!("SELECT studentusi FROM {stage}")),
            Changed::Replaced => None,
        })
        .collect()
}
