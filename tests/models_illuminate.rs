//! The `illuminate` reporting models (connectors/models/illuminate), built from the simulator's
//! sample data after real replication, and compared with the same facts computed here in Rust
//! from the source's raw rows — not with a second run of the same SQL. Then queries of the kind
//! the two Tableau workbooks run, against the built models.

mod support;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use edfi_cdc::models::Models;
use support::*;
use tokio_postgres::Client;

const TABLES: usize = 37;
const CATCH_UP: Duration = Duration::from_secs(180);
const ILLUMINATE_NS: &str = "uri://illuminateed.com";
const STANDARD_NS: [&str; 2] = [
    "uri://illuminateed.com/LearningStandards.xml",
    "uri://academicbenchmarks.com/LearningStandards.xml",
];

type Row = Vec<Option<String>>;

/// The lower-case `edfi.table` names of the shipped connector's `group`, as the rig's connector
/// file configures them.
fn group_tables(connector: &Connector, group: &str) -> HashSet<String> {
    let env: HashMap<String, String> = connector.env.iter().cloned().collect();
    let configs = edfi_cdc::config::load(std::slice::from_ref(&connector.path), &|k| {
        env.get(k).cloned()
    })
    .unwrap_or_else(|e| panic!("connector file: {e}"));
    let g = &configs[0].groups[group];
    g.tables
        .iter()
        .map(|t| format!("{}.{t}", g.schema).to_lowercase())
        .collect()
}

/// Start the replicator and wait until staging holds the source's current version.
async fn replicate(rig: &Rig) -> (Replicator, i64) {
    let rep = rig.connector.run();
    let version = wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    (rep, version)
}

/// Create the reporting tables (checking each model against its table and its SELECT) and fill
/// every model from staging in one transaction at `version`.
async fn build(rig: &mut Rig, models: &Models, version: i64) {
    models.install(&rig.target).await.unwrap();
    let problems = models.check(&rig.target).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let tx = rig.target.transaction().await.unwrap();
    let done = models
        .refresh(&tx, &models.inputs(), version, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(done.len(), models.models().len(), "{done:?}");
}

/// The models of the `illuminate` group, allowed to read that group's tables only.
fn illuminate_models(rig: &Rig) -> Models {
    let configured = group_tables(&rig.connector, "illuminate");
    Models::load(&shipped_models_dir(), &["illuminate"], &configured)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every row of `sql`'s result, each column as text (NULL as `None`).
async fn text_rows(client: &Client, sql: &str) -> Vec<Row> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

/// Every row of a query's result, each column cast to text by name (for typed results).
async fn query_text_rows(client: &Client, sql: &str) -> Vec<Row> {
    let stmt = client
        .prepare(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let cols: Vec<String> = stmt
        .columns()
        .iter()
        .map(|c| format!("w.{}::text", c.name()))
        .collect();
    text_rows(
        client,
        &format!("SELECT {} FROM ({sql}) w", cols.join(", ")),
    )
    .await
}

/// Columns of a source table (the simulator's backing database, Ed-Fi spelling), as text.
async fn source_rows(client: &Client, table: &str, columns: &[&str]) -> Vec<Row> {
    let cols: Vec<String> = columns.iter().map(|c| format!("\"{c}\"::text")).collect();
    text_rows(
        client,
        &format!("SELECT {} FROM edfi.\"{table}\"", cols.join(", ")),
    )
    .await
}

/// A model's rows, every column as text, sorted.
async fn model_rows(client: &Client, model: &Models, name: &str) -> Vec<Row> {
    let m = model
        .models()
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no model {name}"));
    let cols: Vec<String> = m
        .columns
        .iter()
        .map(|c| format!("{}::text", c.name))
        .collect();
    let mut rows = text_rows(
        client,
        &format!("SELECT {} FROM {}", cols.join(", "), m.target()),
    )
    .await;
    rows.sort();
    rows
}

fn get(r: &Row, i: usize) -> String {
    r[i].clone()
        .unwrap_or_else(|| panic!("column {i} is NULL in {r:?}"))
}

/// The school year (ending June 30) of a date or timestamp in ISO text.
fn school_year(date: &str) -> i32 {
    let year: i32 = date[0..4].parse().unwrap();
    let month: u32 = date[5..7].parse().unwrap();
    year + i32::from(month >= 7)
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A score text that is an unsigned decimal number.
fn number(s: &str) -> Option<f64> {
    let t = s.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (digits(int) && digits(frac)).then(|| t.parse().unwrap())
}

fn fixed(v: f64, scale: usize) -> String {
    format!("{v:.scale$}")
}

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// The raw rows the Illuminate reports are made of, read from the source.
struct Ods {
    /// DescriptorId → (CodeValue, LastModifiedDate).
    descriptors: HashMap<String, (String, String)>,
    /// AssessmentIdentifier, Namespace, AssessmentTitle, AssessmentCategoryDescriptorId,
    /// RevisionDate, MaxRawScore, CreateDate, LastModifiedDate.
    assessments: Vec<Row>,
    /// AssessmentIdentifier, Namespace, AcademicSubjectDescriptorId.
    subjects: Vec<Row>,
    /// AssessmentIdentifier, Namespace, GradeLevelDescriptorId.
    grades: Vec<Row>,
    /// AssessmentIdentifier, IdentificationCode, Namespace, AssessmentItemCategoryDescriptorId,
    /// MaxRawScore, CorrectResponse, LastModifiedDate.
    items: Vec<Row>,
    /// AssessmentIdentifier, IdentificationCode, LearningStandardId, Namespace, CreateDate.
    alignments: Vec<Row>,
    /// LearningStandardId, Description, LearningStandardItemCode, Namespace, LastModifiedDate.
    standards: Vec<Row>,
    /// AssessmentIdentifier, Namespace, StudentAssessmentIdentifier, StudentUSI,
    /// AdministrationDate, WhenAssessedGradeLevelDescriptorId, SchoolYear, LastModifiedDate.
    taken: Vec<Row>,
    /// AssessmentIdentifier, Namespace, StudentAssessmentIdentifier, StudentUSI,
    /// AssessmentReportingMethodDescriptorId, Result.
    scores: Vec<Row>,
    /// AssessmentIdentifier, Namespace, StudentAssessmentIdentifier, StudentUSI,
    /// AssessmentReportingMethodDescriptorId, PerformanceLevelDescriptorId.
    levels: Vec<Row>,
    /// AssessmentIdentifier, Namespace, AssessmentReportingMethodDescriptorId,
    /// PerformanceLevelDescriptorId, MinimumScore.
    defined_levels: Vec<Row>,
    /// AssessmentIdentifier, IdentificationCode, Namespace, StudentAssessmentIdentifier,
    /// StudentUSI, AssessmentResponse, AssessmentItemResultDescriptorId, RawScoreResult,
    /// CreateDate.
    responses: Vec<Row>,
    /// StudentUSI → StudentUniqueId.
    students: HashMap<String, String>,
    /// StudentUSI, SchoolId, EntryDate, ExitWithdrawDate, EntryGradeLevelDescriptorId.
    enrollments: Vec<Row>,
}

impl Ods {
    async fn read(c: &Client) -> Ods {
        let descriptors = source_rows(
            c,
            "Descriptor",
            &["DescriptorId", "CodeValue", "LastModifiedDate"],
        )
        .await
        .into_iter()
        .map(|r| (get(&r, 0), (get(&r, 1), get(&r, 2))))
        .collect();
        let students = source_rows(c, "Student", &["StudentUSI", "StudentUniqueId"])
            .await
            .into_iter()
            .map(|r| (get(&r, 0), get(&r, 1)))
            .collect();
        Ods {
            descriptors,
            students,
            assessments: source_rows(
                c,
                "Assessment",
                &[
                    "AssessmentIdentifier",
                    "Namespace",
                    "AssessmentTitle",
                    "AssessmentCategoryDescriptorId",
                    "RevisionDate",
                    "MaxRawScore",
                    "CreateDate",
                    "LastModifiedDate",
                ],
            )
            .await,
            subjects: source_rows(
                c,
                "AssessmentAcademicSubject",
                &[
                    "AssessmentIdentifier",
                    "Namespace",
                    "AcademicSubjectDescriptorId",
                ],
            )
            .await,
            grades: source_rows(
                c,
                "AssessmentAssessedGradeLevel",
                &[
                    "AssessmentIdentifier",
                    "Namespace",
                    "GradeLevelDescriptorId",
                ],
            )
            .await,
            items: source_rows(
                c,
                "AssessmentItem",
                &[
                    "AssessmentIdentifier",
                    "IdentificationCode",
                    "Namespace",
                    "AssessmentItemCategoryDescriptorId",
                    "MaxRawScore",
                    "CorrectResponse",
                    "LastModifiedDate",
                ],
            )
            .await,
            alignments: source_rows(
                c,
                "AssessmentItemLearningStandard",
                &[
                    "AssessmentIdentifier",
                    "IdentificationCode",
                    "LearningStandardId",
                    "Namespace",
                    "CreateDate",
                ],
            )
            .await,
            standards: source_rows(
                c,
                "LearningStandard",
                &[
                    "LearningStandardId",
                    "Description",
                    "LearningStandardItemCode",
                    "Namespace",
                    "LastModifiedDate",
                ],
            )
            .await,
            taken: source_rows(
                c,
                "StudentAssessment",
                &[
                    "AssessmentIdentifier",
                    "Namespace",
                    "StudentAssessmentIdentifier",
                    "StudentUSI",
                    "AdministrationDate",
                    "WhenAssessedGradeLevelDescriptorId",
                    "SchoolYear",
                    "LastModifiedDate",
                ],
            )
            .await,
            scores: source_rows(
                c,
                "StudentAssessmentScoreResult",
                &[
                    "AssessmentIdentifier",
                    "Namespace",
                    "StudentAssessmentIdentifier",
                    "StudentUSI",
                    "AssessmentReportingMethodDescriptorId",
                    "Result",
                ],
            )
            .await,
            levels: source_rows(
                c,
                "StudentAssessmentPerformanceLevel",
                &[
                    "AssessmentIdentifier",
                    "Namespace",
                    "StudentAssessmentIdentifier",
                    "StudentUSI",
                    "AssessmentReportingMethodDescriptorId",
                    "PerformanceLevelDescriptorId",
                ],
            )
            .await,
            defined_levels: source_rows(
                c,
                "AssessmentPerformanceLevel",
                &[
                    "AssessmentIdentifier",
                    "Namespace",
                    "AssessmentReportingMethodDescriptorId",
                    "PerformanceLevelDescriptorId",
                    "MinimumScore",
                ],
            )
            .await,
            responses: source_rows(
                c,
                "StudentAssessmentItem",
                &[
                    "AssessmentIdentifier",
                    "IdentificationCode",
                    "Namespace",
                    "StudentAssessmentIdentifier",
                    "StudentUSI",
                    "AssessmentResponse",
                    "AssessmentItemResultDescriptorId",
                    "RawScoreResult",
                    "CreateDate",
                ],
            )
            .await,
            enrollments: source_rows(
                c,
                "StudentSchoolAssociation",
                &[
                    "StudentUSI",
                    "SchoolId",
                    "EntryDate",
                    "ExitWithdrawDate",
                    "EntryGradeLevelDescriptorId",
                ],
            )
            .await,
        }
    }

    fn code(&self, id: &Option<String>) -> Option<String> {
        id.as_ref().map(|id| self.descriptors[id].0.clone())
    }

    /// Illuminate assessment → test year: the latest school year it was given in, else the
    /// school year of its revision (else creation) date.
    fn test_years(&self) -> BTreeMap<String, i32> {
        let mut given: HashMap<(&Option<String>, &Option<String>), i32> = HashMap::new();
        for t in &self.taken {
            let year = t[6]
                .as_ref()
                .map_or_else(|| school_year(&get(t, 4)), |y| y.parse().unwrap());
            let y = given.entry((&t[0], &t[1])).or_insert(year);
            *y = (*y).max(year);
        }
        self.assessments
            .iter()
            .filter(|a| get(a, 1) == ILLUMINATE_NS)
            .map(|a| {
                let given = given.get(&(&a[0], &a[1])).copied();
                let fallback = school_year(&a[4].clone().unwrap_or_else(|| get(a, 6)));
                (get(a, 0), given.unwrap_or(fallback))
            })
            .collect()
    }

    fn assessment(&self) -> Vec<Row> {
        let years = self.test_years();
        let mut out = Vec::new();
        for a in self
            .assessments
            .iter()
            .filter(|a| get(a, 1) == ILLUMINATE_NS)
        {
            let category = self.code(&a[3]);
            let title = get(a, 2);
            let subtype = match (&category, title.find('#')) {
                (Some(c), Some(p)) if c == "Weekly Quizzes" => Some(format!(
                    "WQ {}",
                    cut(&title[p + 1..], 2).replace('.', " ").trim()
                )),
                _ => category.as_deref().map(|c| cut(c, 20)),
            };
            let subject = self
                .subjects
                .iter()
                .filter(|r| r[0] == a[0] && r[1] == a[1])
                .map(|r| self.code(&r[2]).unwrap())
                .min();
            let grade = self
                .grades
                .iter()
                .filter(|r| r[0] == a[0] && r[1] == a[1])
                .map(|r| {
                    let code = self.code(&r[2]).unwrap();
                    (grade_number(&code).map_or(-1, |g| g as i32), code)
                })
                .min_by_key(|(n, code)| (*n < 0, *n, code.clone()));
            out.push(vec![
                a[0].clone(),
                s("Illuminate"),
                category.as_deref().map(|c| cut(c, 20)),
                subtype,
                subject.clone(),
                subject,
                grade.as_ref().map(|g| cut(&g.1, 30)),
                grade.as_ref().map(|g| g.0.to_string()),
                a[2].clone(),
                s("testadmin"),
                s("true"),
                s(years[&get(a, 0)]),
                a[7].clone(),
            ]);
        }
        out.sort();
        out
    }

    /// The items of Illuminate assessments, with their assessment's test year.
    fn illuminate_items(&self) -> Vec<(&Row, i32)> {
        let years = self.test_years();
        self.items
            .iter()
            .filter(|i| get(i, 2) == ILLUMINATE_NS)
            .filter_map(|i| years.get(&get(i, 0)).map(|y| (i, *y)))
            .collect()
    }

    fn assessmentitem(&self) -> Vec<Row> {
        let items = self.illuminate_items();
        let mut out = Vec::new();
        for (i, year) in &items {
            let code = get(i, 1);
            let sequence = match code.split(':').nth(1).map(|p| cut(p, 10)) {
                Some(p) if !p.is_empty() => p,
                _ => {
                    let before = items
                        .iter()
                        .filter(|(o, _)| o[0] == i[0])
                        .filter(|(o, _)| {
                            let other = get(o, 1);
                            (other.chars().count(), &other) < (code.chars().count(), &code)
                        })
                        .count();
                    (before + 1).to_string()
                }
            };
            let category = self.code(&i[3]);
            let flag = |word: &str| {
                s(u8::from(
                    category.as_deref().is_some_and(|c| c.contains(word)),
                ))
            };
            let max = i[4].as_deref().map(|m| m.parse::<f64>().unwrap());
            out.push(vec![
                i[0].clone(),
                s(&code),
                s(&code),
                s(sequence),
                max.map(|m| m.to_string()),
                s(i[5].clone().unwrap_or_default()),
                category.as_deref().map(|c| cut(c, 10)),
                flag("Difficulty"),
                flag("Fluency"),
                max.map(|m| fixed(m, 10)),
                s(year),
                i[6].clone(),
            ]);
        }
        out.sort();
        out
    }

    fn reportinggroup(&self) -> Vec<Row> {
        let mut groups: BTreeMap<String, i32> = BTreeMap::new();
        for (i, year) in self.illuminate_items() {
            if let Some(c) = &i[3] {
                let y = groups.entry(c.clone()).or_insert(year);
                *y = (*y).max(year);
            }
        }
        let mut out: Vec<Row> = groups
            .into_iter()
            .map(|(id, year)| {
                let (code, modified) = &self.descriptors[&id];
                vec![s(&id), s(code.trim()), s(year), s(modified)]
            })
            .collect();
        out.sort();
        out
    }

    fn itemreportinggroup(&self) -> Vec<Row> {
        let mut out: Vec<Row> = self
            .illuminate_items()
            .into_iter()
            .filter(|(i, _)| i[3].is_some())
            .map(|(i, year)| {
                vec![
                    i[1].clone(),
                    i[3].clone(),
                    self.code(&i[3]).map(|c| c.trim().to_string()),
                    s(year),
                    i[6].clone(),
                    i[0].clone(),
                ]
            })
            .collect();
        out.sort();
        out
    }

    fn itemstandard(&self) -> Vec<Row> {
        let years = self.test_years();
        let mut out = Vec::new();
        for l in self
            .alignments
            .iter()
            .filter(|l| get(l, 3) == ILLUMINATE_NS)
        {
            let Some(year) = years.get(&get(l, 0)) else {
                continue;
            };
            let Some(st) = self
                .standards
                .iter()
                .find(|st| st[0] == l[2] && STANDARD_NS.contains(&get(st, 3).as_str()))
            else {
                continue;
            };
            out.push(vec![
                l[0].clone(),
                l[1].clone(),
                st[0].clone(),
                st[2].clone(),
                st[1].as_deref().map(|d| cut(d, 1000)),
                s(year),
                l[4].clone(),
            ]);
        }
        out.sort();
        out
    }

    fn standard(&self) -> Vec<Row> {
        let mut years: BTreeMap<String, String> = BTreeMap::new();
        for r in self.itemstandard() {
            let y = years.entry(get(&r, 2)).or_insert_with(|| get(&r, 5));
            if get(&r, 5).parse::<i32>().unwrap() > y.parse().unwrap() {
                *y = get(&r, 5);
            }
        }
        let mut out: Vec<Row> = years
            .into_iter()
            .map(|(id, year)| {
                let st = self.standards.iter().find(|st| get(st, 0) == id).unwrap();
                vec![
                    s(&id),
                    st[2].clone(),
                    None,
                    None,
                    st[1].as_deref().map(|d| cut(d, 1000)),
                    s(year),
                    st[4].clone(),
                ]
            })
            .collect();
        out.sort();
        out
    }

    /// The enrollment a test taken on `date` counts under: the one covering the date, else the
    /// latest begun before it, else the first begun after it.
    fn enrollment_on<'a>(enrollments: &[&'a Row], date: &str) -> Option<&'a Row> {
        // (fit, entry date when begun after, latest entry first, school, row)
        type Candidate<'r> = (u8, Option<String>, Reverse<String>, i64, &'r Row);
        let mut candidates: Vec<Candidate> = enrollments
            .iter()
            .map(|&e| {
                let entry = get(e, 2);
                let fit =
                    if entry.as_str() <= date && e[3].as_deref().is_none_or(|exit| exit >= date) {
                        0
                    } else if entry.as_str() <= date {
                        1
                    } else {
                        2
                    };
                let after = (fit == 2).then(|| entry.clone());
                (fit, after, Reverse(entry), get(e, 1).parse().unwrap(), e)
            })
            .collect();
        candidates.sort_by(|a, b| (a.0, &a.1, &a.2, a.3).cmp(&(b.0, &b.1, &b.2, b.3)));
        candidates.first().map(|c| c.4)
    }

    /// The result of a reporting method among a student assessment's results, if numeric.
    fn score(&self, results: &[&Row], method: &str) -> Option<f64> {
        results
            .iter()
            .find(|r| self.code(&r[4]).as_deref() == Some(method))
            .and_then(|r| number(&get(r, 5)))
    }

    fn studentaggregatescore(&self) -> Vec<Row> {
        let mut results: HashMap<&[Option<String>], Vec<&Row>> = HashMap::new();
        for r in &self.scores {
            results.entry(&r[0..4]).or_default().push(r);
        }
        let mut enrollments: HashMap<&Option<String>, Vec<&Row>> = HashMap::new();
        for e in &self.enrollments {
            enrollments.entry(&e[0]).or_default().push(e);
        }
        let mut points: HashMap<(&Option<String>, &Option<String>), Vec<f64>> = HashMap::new();
        for i in &self.items {
            let entry = points.entry((&i[0], &i[2])).or_default();
            if let Some(m) = &i[4] {
                entry.push(m.parse().unwrap());
            }
        }
        let mut out = Vec::new();
        for t in self.taken.iter().filter(|t| get(t, 1) == ILLUMINATE_NS) {
            let date = cut(&get(t, 4), 10);
            let enrolled = Self::enrollment_on(
                enrollments.get(&t[3]).map_or(&[][..], |v| v.as_slice()),
                &date,
            );
            let grade = self
                .code(&t[5])
                .or_else(|| enrolled.and_then(|e| self.code(&e[4])));
            let item_points = points
                .get(&(&t[0], &t[1]))
                .map_or(&[][..], |v| v.as_slice());
            let possible = if item_points.is_empty() {
                self.assessments
                    .iter()
                    .find(|a| a[0] == t[0] && a[1] == t[1])
                    .and_then(|a| a[5].as_deref().map(|m| m.parse::<f64>().unwrap()))
            } else {
                Some(item_points.iter().sum())
            };
            let year = t[6]
                .as_ref()
                .map_or_else(|| school_year(&get(t, 4)), |y| y.parse().unwrap());
            let own = results.get(&t[0..4]).map_or(&[][..], |v| v.as_slice());
            out.push(vec![
                s(&self.students[&get(t, 3)]),
                t[0].clone(),
                s(&date),
                enrolled.and_then(|e| e[1].clone()),
                grade.map(|g| cut(&g, 20)),
                self.score(own, "Raw score").map(|v| fixed(v, 2)),
                possible.map(|v| fixed(v, 2)),
                self.score(own, "Scale score").map(|v| fixed(v, 2)),
                s(year),
                t[7].clone(),
                t[2].clone(),
            ]);
        }
        out.sort();
        out
    }

    fn studentitemscore(&self, aggregates: &[Row]) -> Vec<Row> {
        let mut responses: HashMap<(&Option<String>, &Option<String>), Vec<&Row>> = HashMap::new();
        for r in self.responses.iter().filter(|r| get(r, 2) == ILLUMINATE_NS) {
            responses.entry((&r[0], &r[3])).or_default().push(r);
        }
        // Per (student number, assessment): the most recent attempt with item results.
        let mut latest: BTreeMap<(String, String), &Row> = BTreeMap::new();
        for a in aggregates {
            if !responses.contains_key(&(&a[1], &a[10])) {
                continue;
            }
            let key = (get(a, 0), get(a, 1));
            let newer = latest
                .get(&key)
                .is_none_or(|l| (get(a, 2), get(a, 10)) > (get(l, 2), get(l, 10)));
            if newer {
                latest.insert(key, a);
            }
        }
        let maxima: HashMap<&[Option<String>], &Option<String>> =
            self.items.iter().map(|i| (&i[0..3], &i[4])).collect();
        let mut out = Vec::new();
        for a in latest.values() {
            for r in responses.get(&(&a[1], &a[10])).into_iter().flatten() {
                let correct = self.code(&r[6]).as_deref() == Some("Correct");
                let raw = r[7].as_deref().map(|v| v.parse::<f64>().unwrap());
                let max = maxima
                    .get(&r[0..3])
                    .and_then(|m| m.as_deref().map(|m| m.parse::<f64>().unwrap()));
                let earned = match (raw, correct) {
                    (Some(v), _) => Some(v),
                    (None, true) => max,
                    (None, false) => Some(0.0),
                };
                out.push(vec![
                    a[0].clone(),
                    a[1].clone(),
                    a[10].clone(),
                    a[2].clone(),
                    r[1].clone(),
                    r[5].clone(),
                    raw.map(|v| fixed(v, 10)),
                    a[8].clone(),
                    s(correct),
                    r[8].clone(),
                    a[3].clone(),
                    a[4].clone(),
                    earned.map(|v| fixed(v, 10)),
                ]);
            }
        }
        out.sort();
        out
    }

    /// A performance level's place among the levels an assessment defines for a method,
    /// by minimum score (1 = lowest; levels without a numeric minimum last).
    fn level_number(&self, l: &Row) -> Option<i32> {
        let key = |r: &Row| r[4].as_deref().and_then(number);
        let peers: Vec<&Row> = self
            .defined_levels
            .iter()
            .filter(|d| d[0] == l[0] && d[1] == l[1] && d[2] == l[4])
            .collect();
        let own = peers.iter().find(|d| d[3] == l[5])?;
        let below = |other: Option<f64>, mine: Option<f64>| match (other, mine) {
            (Some(o), Some(m)) => o < m,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Some(1 + peers.iter().filter(|p| below(key(p), key(own))).count() as i32)
    }

    /// Every model's expected rows, sorted.
    fn expected(&self) -> [(&'static str, Vec<Row>); 9] {
        let aggregates = self.studentaggregatescore();
        [
            ("illuminate.assessment", self.assessment()),
            ("illuminate.assessmentitem", self.assessmentitem()),
            ("illuminate.reportinggroup", self.reportinggroup()),
            ("illuminate.itemreportinggroup", self.itemreportinggroup()),
            ("illuminate.itemstandard", self.itemstandard()),
            ("illuminate.standard", self.standard()),
            (
                "illuminate.studentitemscore",
                self.studentitemscore(&aggregates),
            ),
            (
                "illuminate.performancelevel",
                self.performancelevel(&aggregates),
            ),
            ("illuminate.studentaggregatescore", aggregates),
        ]
    }

    fn performancelevel(&self, aggregates: &[Row]) -> Vec<Row> {
        let attempts: HashMap<(&Option<String>, &Option<String>), &Row> =
            aggregates.iter().map(|a| ((&a[1], &a[10]), a)).collect();
        type Pick<'a> = (Reverse<(String, String)>, String, String, &'a Row, &'a Row);
        let mut best: BTreeMap<(String, String), Pick> = BTreeMap::new();
        for l in self.levels.iter().filter(|l| get(l, 1) == ILLUMINATE_NS) {
            let Some(a) = attempts.get(&(&l[0], &l[2])).copied() else {
                continue;
            };
            let candidate: Pick = (
                Reverse((get(a, 2), get(a, 10))),
                self.code(&l[4]).unwrap(),
                self.code(&l[5]).unwrap(),
                a,
                l,
            );
            let key = (get(a, 1), get(a, 0));
            let better = best
                .get(&key)
                .is_none_or(|b| (&candidate.0, &candidate.1, &candidate.2) < (&b.0, &b.1, &b.2));
            if better {
                best.insert(key, candidate);
            }
        }
        let mut out: Vec<Row> = best
            .into_values()
            .map(|(_, _, level, a, l)| {
                vec![
                    a[1].clone(),
                    self.level_number(l).map(|n| n.to_string()),
                    s(cut(&level, 20)),
                    a[0].clone(),
                    a[8].clone(),
                    a[9].clone(),
                ]
            })
            .collect();
        out.sort();
        out
    }
}

fn assert_same(model: &str, built: &[Row], expected: &[Row]) {
    assert!(
        !expected.is_empty(),
        "{model}: the sample data gives no rows"
    );
    if built != expected {
        let missing: Vec<&Row> = expected.iter().filter(|r| !built.contains(r)).collect();
        let extra: Vec<&Row> = built.iter().filter(|r| !expected.contains(r)).collect();
        panic!(
            "{model}: built {} rows, expected {}; {} expected rows missing or different (e.g. {:?}); {} built rows unexpected (e.g. {:?})",
            built.len(),
            expected.len(),
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illuminate_models_equal_the_facts_computed_from_the_source() {
    let mut rig = Rig::new(400, 31).await;
    let models = illuminate_models(&rig);
    let (rep, version) = replicate(&rig).await;
    assert!(rep.terminate(Duration::from_secs(20)).success());
    build(&mut rig, &models, version).await;

    let ods = Ods::read(&rig.source).await;
    let expected = ods.expected();
    assert_eq!(models.models().len(), expected.len());
    for (name, rows) in &expected {
        let built = model_rows(&rig.target, &models, name).await;
        assert_same(name, &built, rows);
    }

    // The sample's shape, as the reports see it: every student took one interim per subject,
    // state assessments stay out, and every item is scored and aligned to a standard.
    let taken = 2 * 400;
    let count = |name: &str| expected.iter().find(|(n, _)| *n == name).unwrap().1.len();
    assert_eq!(count("illuminate.studentaggregatescore"), taken);
    assert_eq!(count("illuminate.performancelevel"), taken);
    assert_eq!(
        count("illuminate.studentitemscore"),
        taken * ods_sim::edfi::plan::ITEMS
    );
    assert_eq!(
        count("illuminate.assessmentitem"),
        count("illuminate.itemstandard")
    );
    assert!(ods
        .assessments
        .iter()
        .any(|a| get(a, 1) != ILLUMINATE_NS && get(a, 0).starts_with("STATE-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illuminate_models_follow_retests_transfers_and_deleted_results() {
    // Four schools of 500 students (elementary, middle, high, elementary), so that students
    // can transfer.
    let mut rig = Rig::new(2000, 32).await;
    let models = illuminate_models(&rig);
    let (rep, version) = replicate(&rig).await;
    build(&mut rig, &models, version).await;

    // Changes of every kind the simulator writes: new attempts (retests among them), changed
    // scores and levels, deleted results, transfers and withdrawals.
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let config = ods_sim::edfi::WorkloadConfig {
        rate: 500.0,
        seed: 33,
        writers: 2,
        max_changes: Some(4000),
        duration: Some(Duration::from_secs(120)),
        bursts: false,
    };
    let stats = ods_sim::edfi::run_workload(&rig.sim.backing_url(), config, stop)
        .await
        .unwrap();
    for kind in [
        "assessment",
        "score",
        "delete_assessment",
        "transfer",
        "exit_date",
    ] {
        assert!(
            stats.kinds.get(kind).is_some_and(|n| *n > 0),
            "the workload ran no {kind}: {:?}",
            stats.kinds
        );
    }
    let version = wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert!(rep.terminate(Duration::from_secs(20)).success());
    build(&mut rig, &models, version).await;

    let ods = Ods::read(&rig.source).await;
    assert!(
        ods.taken.iter().any(|t| get(t, 2).ends_with("-R1")),
        "the workload wrote no retest"
    );
    let mut enrollments: HashMap<String, usize> = HashMap::new();
    for e in &ods.enrollments {
        *enrollments.entry(get(e, 0)).or_default() += 1;
    }
    assert!(
        enrollments.values().any(|n| *n > 1),
        "the workload wrote no transfer"
    );
    for (name, rows) in &ods.expected() {
        let built = model_rows(&rig.target, &models, name).await;
        assert_same(name, &built, rows);
    }
}

/// "Test score summary": scores per student, assessment, school year and school, with
/// percentile ranks in the network, the region and the school, joined to the student's most
/// recent enrollment, the student, the school, the performance level and the teacher of the
/// student's section in the tested subject on the test date. (The workbook's previous-year state
/// test level and program-eligibility columns come from datasets outside the ODS.)
const TEST_SCORE_SUMMARY: &str = "
SELECT
    sas.studentassessmentid,
    sy.schoolyear,
    sy.yearsago,
    sas.studentnumber,
    s.fullname,
    l.schoolname,
    l.schoolabbreviation,
    l.region,
    l.level,
    sas.gradelevel,
    sas.assessmentid,
    a.testtype,
    a.testsubtype,
    a.testsubjectgroup,
    a.testsubject,
    a.testname,
    a.testgradelevel,
    sas.testdate,
    sas.testscore,
    sas.rawscore,
    sas.pointspossible,
    CAST(PERCENT_RANK() OVER (PARTITION BY a.assessmentid ORDER BY sas.testscore) AS decimal(38,2))
        AS pctilerank_network,
    CAST(PERCENT_RANK() OVER (PARTITION BY a.assessmentid, l.region ORDER BY sas.testscore)
        AS decimal(38,2)) AS pctilerank_region,
    CAST(PERCENT_RANK() OVER (PARTITION BY a.assessmentid, l.schoolnumber ORDER BY sas.testscore)
        AS decimal(38,2)) AS pctilerank_school,
    pl.performancelevel,
    pl.performancelevelnumeric,
    t.teacher_name,
    t.sectionnumber
FROM illuminate.studentaggregatescore sas
JOIN illuminate.assessment a
    ON sas.assessmentid = a.assessmentid
    AND sas.endyear = a.testyear
    AND a.isnetworkassessment = TRUE
JOIN schedule.schoolyear sy
    ON sas.endyear = sy.endyear
    AND sy.yearsago IN (0, 1, 2)
JOIN enrollment.studentenrollment e
    ON sas.studentnumber = e.studentnumber
    AND sas.endyear = e.endyear
    AND e.mostrecentenrollmentyear = TRUE
JOIN studentdemographics.student s
    ON sas.studentnumber = s.studentnumber
JOIN schedule.school l
    ON sas.schoolnumber = l.schoolnumber
LEFT JOIN illuminate.performancelevel pl
    ON sas.assessmentid = pl.assessmentid
    AND sas.studentnumber = pl.studentnumber
LEFT JOIN (
    SELECT
        tsl.studentnumber,
        tsl.endyear,
        tsl.rosterstartdate,
        tsl.rosterenddate,
        c.department,
        sec.sectionnumber,
        st.fullname AS teacher_name
    FROM roster.teacherstudentlinks tsl
    JOIN roster.course c
        ON c.courseid = tsl.courseid
    JOIN roster.section sec
        ON sec.sectionid = tsl.sectionid
    LEFT JOIN staffidentity.staff st
        ON st.staffnumber = tsl.staffnumber
) t
    ON t.studentnumber = sas.studentnumber
    AND t.endyear = sas.endyear
    AND t.department = a.testsubjectgroup
    AND t.rosterstartdate <= sas.testdate
    AND (t.rosterenddate IS NULL OR t.rosterenddate >= sas.testdate)
";

/// "Instructional analysis": item scores by student, test section (each question, each
/// question group, each standard) and the teacher's section in the tested subject, for the
/// active school year and the student's active enrollment.
const INSTRUCTIONAL_ANALYSIS: &str = "
SELECT
    sis.studentassessmentid,
    sis.studentnumber,
    s.fullname,
    ci.teacher_name,
    ci.sectionnumber,
    e.gradelevel,
    l.schoolname,
    l.region,
    sis.assessmentid,
    a.testsubtype,
    a.testsubject,
    a.testgradelevel,
    a.testname,
    content.contenttype,
    content.contentid,
    content.contentlabel,
    sis.questionid,
    ai.questionnumber,
    ai.difficultyflag,
    sis.iscorrect,
    sis.testdate,
    sis.studentresponse,
    sis.rawpointsearned,
    ai.maximum,
    ai.rawpointsworth
FROM illuminate.studentitemscore sis
JOIN illuminate.assessment a
    ON sis.assessmentid = a.assessmentid
    AND sis.endyear = a.testyear
    AND a.isnetworkassessment = TRUE
JOIN schedule.schoolyear sy
    ON sis.endyear = sy.endyear
    AND sy.active = TRUE
JOIN illuminate.assessmentitem ai
    ON sis.assessmentid = ai.assessmentid
    AND sis.questionid = ai.questionid
    AND sis.endyear = ai.testyear
    AND ai.maximum <> 0
JOIN (
    SELECT 'Question' AS contenttype, q.assessmentid, q.questionid,
        q.questionid AS contentid, q.questiontype AS contentlabel, q.testyear
    FROM illuminate.assessmentitem q
    UNION ALL
    SELECT 'Question Group', g.assessmentid, g.questionid,
        CAST(g.reportinggroupid AS varchar(60)), g.reportinggrouplabel, g.testyear
    FROM illuminate.itemreportinggroup g
    UNION ALL
    SELECT 'Standard', x.assessmentid, x.questionid, x.standardid, x.standardcode, x.testyear
    FROM illuminate.itemstandard x
) content
    ON content.assessmentid = sis.assessmentid
    AND content.questionid = sis.questionid
    AND content.testyear = sis.endyear
JOIN schedule.school l
    ON sis.schoolnumber = l.schoolnumber
JOIN studentdemographics.student s
    ON sis.studentnumber = s.studentnumber
JOIN enrollment.studentenrollment e
    ON sis.studentnumber = e.studentnumber
    AND sis.endyear = e.endyear
    AND e.activeenrollment = TRUE
JOIN (
    SELECT DISTINCT
        tsl.studentnumber,
        tsl.endyear,
        tsl.rosterstartdate,
        tsl.rosterenddate,
        c.department AS testsubjectgroup,
        sec.sectionnumber,
        st.fullname AS teacher_name
    FROM roster.teacherstudentlinks tsl
    JOIN roster.course c
        ON c.courseid = tsl.courseid
    JOIN roster.section sec
        ON sec.sectionid = tsl.sectionid
    LEFT JOIN staffidentity.staff st
        ON st.staffnumber = tsl.staffnumber
) ci
    ON ci.studentnumber = sis.studentnumber
    AND ci.testsubjectgroup = a.testsubjectgroup
    AND ci.endyear = sis.endyear
    AND ci.rosterstartdate <= sis.testdate
    AND (ci.rosterenddate IS NULL OR ci.rosterenddate >= sis.testdate)
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workbooks_queries_return_the_sample_scores() {
    let mut rig = Rig::new(300, 34).await;
    // Both groups' models, as the connector loads them: the workbooks join the assessment
    // tables to enrollment, student, school, roster and staff tables of group "ic".
    let env: HashMap<String, String> = rig.connector.env.iter().cloned().collect();
    let configs = edfi_cdc::config::load(std::slice::from_ref(&rig.connector.path), &|k| {
        env.get(k).cloned()
    })
    .unwrap_or_else(|e| panic!("connector file: {e}"));
    let models = Models::load_for_connector(&shipped_models_dir(), &configs[0])
        .unwrap_or_else(|e| panic!("{e}"));
    let (rep, version) = replicate(&rig).await;
    assert!(rep.terminate(Duration::from_secs(20)).success());
    build(&mut rig, &models, version).await;

    let scores: i64 = rig
        .target
        .query_one("SELECT count(*) FROM illuminate.studentaggregatescore", &[])
        .await
        .unwrap()
        .get(0);
    let summary = query_text_rows(&rig.target, TEST_SCORE_SUMMARY).await;
    assert!(!summary.is_empty(), "test score summary returned no rows");
    let ids: HashSet<&Option<String>> = summary.iter().map(|r| &r[0]).collect();
    assert_eq!(
        ids.len(),
        summary.len(),
        "one row per student assessment (one teacher section per subject on the test date)"
    );
    assert!(
        summary.len() as i64 * 10 >= scores * 9,
        "most scores reach the summary: {} of {scores}",
        summary.len()
    );
    // Percentile ranks, computed here: the share of the other scores of the assessment (in
    // the network, the region, the school) that are lower.
    for r in &summary {
        assert!(
            r[24].is_some() && r[25].is_some(),
            "no performance level: {r:?}"
        );
        for (col, peers) in [(21, None), (22, Some(7)), (23, Some(5))] {
            let group: Vec<&Row> = summary
                .iter()
                .filter(|o| o[10] == r[10] && peers.is_none_or(|p| o[p] == r[p]))
                .collect();
            let score = |o: &Row| get(o, 18).parse::<f64>().unwrap();
            let lower = group.iter().filter(|o| score(o) < score(r)).count();
            let expected = if group.len() > 1 {
                lower as f64 / (group.len() - 1) as f64
            } else {
                0.0
            };
            let got: f64 = get(r, col).parse().unwrap();
            assert!(
                (got - expected).abs() <= 0.0051,
                "column {col}: rank {got}, expected {expected:.4} in {r:?}"
            );
        }
    }
    assert!(
        summary.iter().filter(|r| r[26].is_some()).count() * 10 >= summary.len() * 9,
        "most scores have the teacher of the tested subject"
    );

    let analysis = query_text_rows(&rig.target, INSTRUCTIONAL_ANALYSIS).await;
    assert!(
        !analysis.is_empty(),
        "instructional analysis returned no rows"
    );
    let kinds: HashSet<String> = analysis.iter().map(|r| get(r, 13)).collect();
    for kind in ["Question", "Question Group", "Standard"] {
        assert!(kinds.contains(kind), "no {kind} rows: {kinds:?}");
    }
    assert!(analysis.iter().all(|r| r[3].is_some() && r[4].is_some()));
}
