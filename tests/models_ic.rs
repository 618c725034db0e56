//! The IC reporting models, built from the simulator's sample data replicated into a real
//! PostgreSQL, each compared with the same facts computed here in Rust from the raw ODS rows.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use edfi_cdc::models::{ColumnType, Model, Models};
use support::*;
use tokio_postgres::Client;

const TABLES: usize = 37;
const CATCH_UP: Duration = Duration::from_secs(240);

fn ic_tables() -> HashSet<String> {
    ods_sim::edfi::ic()
        .iter()
        .map(|t| format!("edfi.{}", t.to_lowercase()))
        .collect()
}

fn load_ic() -> Models {
    Models::load(&shipped_models_dir(), &["ic"], &ic_tables()).unwrap_or_else(|e| panic!("{e}"))
}

/// A model cell, typed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum V {
    Null,
    Int(i64),
    Text(String),
    Date(NaiveDate),
    Bool(bool),
    Ts(NaiveDateTime),
}

fn t(s: impl Into<String>) -> V {
    V::Text(s.into())
}
fn i(n: impl Into<i64>) -> V {
    V::Int(n.into())
}
fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> V) -> V {
    v.map_or(V::Null, f)
}

type Table = BTreeMap<Vec<V>, Vec<V>>;

/// Every row of a model's target table, keyed by its primary key.
async fn read_model(client: &Client, m: &Model) -> Table {
    let cols: Vec<String> = m
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect();
    let sql = format!("SELECT {} FROM {}", cols.join(", "), m.target());
    let rows = client.query(&sql, &[]).await.unwrap();
    let mut out = Table::new();
    for r in rows {
        let row: Vec<V> = m
            .columns
            .iter()
            .enumerate()
            .map(|(k, c)| match c.ty {
                ColumnType::SmallInt => opt(r.get::<_, Option<i16>>(k), i),
                ColumnType::Integer => opt(r.get::<_, Option<i32>>(k), i),
                ColumnType::BigInt => opt(r.get::<_, Option<i64>>(k), i),
                ColumnType::Varchar(_) | ColumnType::Char(_) => {
                    opt(r.get::<_, Option<String>>(k), V::Text)
                }
                ColumnType::Boolean => opt(r.get::<_, Option<bool>>(k), V::Bool),
                ColumnType::Date => opt(r.get::<_, Option<NaiveDate>>(k), V::Date),
                ColumnType::Timestamp => opt(r.get::<_, Option<NaiveDateTime>>(k), V::Ts),
                other => panic!("model {}: no test reader for {other}", m.name),
            })
            .collect();
        let key = key_of(m, &row);
        assert!(
            out.insert(key.clone(), row).is_none(),
            "{}: duplicate key {key:?}",
            m.name
        );
    }
    out
}

fn key_of(m: &Model, row: &[V]) -> Vec<V> {
    m.key
        .iter()
        .map(|k| row[m.columns.iter().position(|c| &c.name == k).unwrap()].clone())
        .collect()
}

fn compare(m: &Model, actual: &Table, expected: Vec<Vec<V>>) -> Vec<String> {
    let mut exp = Table::new();
    for row in expected {
        assert_eq!(row.len(), m.columns.len(), "{}: expected row width", m.name);
        let key = key_of(m, &row);
        assert!(
            exp.insert(key.clone(), row).is_none(),
            "{}: the test computed key {key:?} twice",
            m.name
        );
    }
    let mut problems = Vec::new();
    for (k, row) in &exp {
        match actual.get(k) {
            None => problems.push(format!("{}: missing row {row:?}", m.name)),
            Some(a) if a != row => {
                for (c, (x, y)) in m.columns.iter().zip(a.iter().zip(row)) {
                    if x != y {
                        problems.push(format!(
                            "{}: key {k:?}: column {}: model {x:?}, expected {y:?}",
                            m.name, c.name
                        ));
                    }
                }
            }
            Some(_) => {}
        }
    }
    for (k, row) in actual {
        if !exp.contains_key(k) {
            problems.push(format!("{}: unexpected row {row:?}", m.name));
        }
    }
    if exp.is_empty() {
        problems.push(format!("{}: the sample data gives no rows", m.name));
    }
    problems.truncate(10);
    problems
}

/// The raw ODS rows the IC models read, as plain Rust data.
struct Ods {
    descriptor: HashMap<i32, (String, Option<String>)>,
    /// year → (description, current, last modified)
    schoolyear: BTreeMap<i16, (String, bool, NaiveDateTime)>,
    schools: Vec<i32>,
    /// id → (name, short name, operational status, last modified)
    edorg: HashMap<i32, (String, Option<String>, Option<i32>, NaiveDateTime)>,
    /// (edorg, address type, state)
    addresses: Vec<(i32, i32, i32)>,
    /// (school, grade level descriptor)
    gradelevels: Vec<(i32, i32)>,
    /// (code, school, year)
    calendars: Vec<(String, i32, i16)>,
    /// (code, school, year, date, last modified)
    dates: Vec<(String, i32, i16, NaiveDate, NaiveDateTime)>,
    /// (code, school, year, date, event descriptor)
    events: Vec<(String, i32, i16, NaiveDate, i32)>,
    /// (code, edorg, title, subject, last modified)
    courses: Vec<(String, i32, String, Option<i32>, NaiveDateTime)>,
    /// (code, edorg, system descriptor, identification code)
    course_codes: Vec<(String, i32, i32, String)>,
    sections: Vec<SectionRow>,
    /// (school, year, session) → (begin, end)
    sessions: HashMap<(i32, i16, String), (NaiveDate, NaiveDate)>,
    /// usi → (unique id, first, last, last modified)
    staff: HashMap<i32, (String, String, String, NaiveDateTime)>,
    /// (section key, staff usi, begin, end, last modified)
    staff_sections: Vec<StaffSection>,
    students: HashMap<i32, StudentRow>,
    /// (usi, race descriptor)
    races: Vec<(i32, i32)>,
    /// (usi, address, primary)
    emails: Vec<(i32, String, Option<bool>)>,
    enrollments: Vec<Enrollment>,
    /// (section key, usi, begin, end, last modified)
    student_sections: Vec<(SectionKey, i32, NaiveDate, Option<NaiveDate>, NaiveDateTime)>,
}

/// (section key, staff usi, begin, end, last modified)
type StaffSection = (
    SectionKey,
    i32,
    Option<NaiveDate>,
    Option<NaiveDate>,
    NaiveDateTime,
);

/// (school, year, session, local course code, section identifier)
/// (school, year, session, local course code, identifier, last modified, section name)
type SectionRow = (
    i32,
    i16,
    String,
    String,
    String,
    NaiveDateTime,
    Option<String>,
);
type SectionKey = (i32, i16, String, String, String);

struct StudentRow {
    unique_id: String,
    first: String,
    middle: Option<String>,
    last: String,
    birth: NaiveDate,
    sex: Option<i32>,
    modified: NaiveDateTime,
}

struct Enrollment {
    usi: i32,
    school: i32,
    entry: NaiveDate,
    year: Option<i16>,
    calendar: Option<String>,
    grade: i32,
    entry_type: Option<i32>,
    exit: Option<NaiveDate>,
    exit_type: Option<i32>,
    repeat: Option<bool>,
    primary: Option<bool>,
    class_of: Option<i16>,
    modified: NaiveDateTime,
}

impl Ods {
    async fn read(c: &Client) -> Ods {
        let q = |sql: &'static str| async move {
            c.query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        let section_key = |r: &tokio_postgres::Row| -> SectionKey {
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
        };
        Ods {
            descriptor: q("SELECT descriptorid, codevalue, description FROM edfi.descriptor")
                .await
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect(),
            schoolyear: q("SELECT schoolyear, schoolyeardescription, currentschoolyear, lastmodifieddate FROM edfi.schoolyeartype")
                .await
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
                .collect(),
            schools: q("SELECT schoolid FROM edfi.school").await.iter().map(|r| r.get(0)).collect(),
            edorg: q("SELECT educationorganizationid, nameofinstitution, shortnameofinstitution, operationalstatusdescriptorid, lastmodifieddate FROM edfi.educationorganization")
                .await
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
                .collect(),
            addresses: q("SELECT educationorganizationid, addresstypedescriptorid, stateabbreviationdescriptorid FROM edfi.educationorganizationaddress")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            gradelevels: q("SELECT schoolid, gradeleveldescriptorid FROM edfi.schoolgradelevel")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            calendars: q("SELECT calendarcode, schoolid, schoolyear FROM edfi.calendar")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            dates: q("SELECT calendarcode, schoolid, schoolyear, date, lastmodifieddate FROM edfi.calendardate")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect(),
            events: q("SELECT calendarcode, schoolid, schoolyear, date, calendareventdescriptorid FROM edfi.calendardatecalendarevent")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect(),
            courses: q("SELECT coursecode, educationorganizationid, coursetitle, academicsubjectdescriptorid, lastmodifieddate FROM edfi.course")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect(),
            course_codes: q("SELECT coursecode, educationorganizationid, courseidentificationsystemdescriptorid, identificationcode FROM edfi.courseidentificationcode")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect(),
            sections: q("SELECT schoolid, schoolyear, sessionname, localcoursecode, sectionidentifier, lastmodifieddate, sectionname FROM edfi.section")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
                .collect(),
            sessions: q("SELECT schoolid, schoolyear, sessionname, begindate, enddate FROM edfi.session")
                .await
                .iter()
                .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4))))
                .collect(),
            staff: q("SELECT staffusi, staffuniqueid, firstname, lastsurname, lastmodifieddate FROM edfi.staff")
                .await
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
                .collect(),
            staff_sections: q("SELECT schoolid, schoolyear, sessionname, localcoursecode, sectionidentifier, staffusi, begindate, enddate, lastmodifieddate FROM edfi.staffsectionassociation")
                .await
                .iter()
                .map(|r| (section_key(r), r.get(5), r.get(6), r.get(7), r.get(8)))
                .collect(),
            students: q("SELECT studentusi, studentuniqueid, firstname, middlename, lastsurname, birthdate, birthsexdescriptorid, lastmodifieddate FROM edfi.student")
                .await
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        StudentRow {
                            unique_id: r.get(1),
                            first: r.get(2),
                            middle: r.get(3),
                            last: r.get(4),
                            birth: r.get(5),
                            sex: r.get(6),
                            modified: r.get(7),
                        },
                    )
                })
                .collect(),
            races: q("SELECT studentusi, racedescriptorid FROM edfi.studenteducationorganizationassociationrace")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            emails: q("SELECT studentusi, electronicmailaddress, primaryemailaddressindicator FROM edfi.studenteducationorganizationassociationelectronicmail")
                .await
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            enrollments: q("SELECT studentusi, schoolid, entrydate, schoolyear, calendarcode, entrygradeleveldescriptorid, entrytypedescriptorid, exitwithdrawdate, exitwithdrawtypedescriptorid, repeatgradeindicator, primaryschool, classofschoolyear, lastmodifieddate FROM edfi.studentschoolassociation")
                .await
                .iter()
                .map(|r| Enrollment {
                    usi: r.get(0),
                    school: r.get(1),
                    entry: r.get(2),
                    year: r.get(3),
                    calendar: r.get(4),
                    grade: r.get(5),
                    entry_type: r.get(6),
                    exit: r.get(7),
                    exit_type: r.get(8),
                    repeat: r.get(9),
                    primary: r.get(10),
                    class_of: r.get(11),
                    modified: r.get(12),
                })
                .collect(),
            student_sections: q("SELECT schoolid, schoolyear, sessionname, localcoursecode, sectionidentifier, studentusi, begindate, enddate, lastmodifieddate FROM edfi.studentsectionassociation")
                .await
                .iter()
                .map(|r| (section_key(r), r.get(5), r.get(6), r.get(7), r.get(8)))
                .collect(),
        }
    }

    fn code(&self, id: i32) -> &str {
        &self.descriptor[&id].0
    }

    fn current_year(&self) -> Option<i16> {
        self.schoolyear
            .iter()
            .filter(|(_, v)| v.1)
            .map(|(y, _)| *y)
            .max()
    }

    /// The reporting id of a code: the code itself when it is a number of at most `digits`
    /// digits, else minus the 1-based place of `key` among `all` (sorted).
    fn surrogate<K: Ord>(code: &str, digits: usize, key: &K, all: &[K]) -> i64 {
        if !code.is_empty() && code.len() <= digits && code.bytes().all(|b| b.is_ascii_digit()) {
            return code.parse().unwrap();
        }
        let mut sorted: Vec<&K> = all.iter().collect();
        sorted.sort();
        -(sorted.iter().position(|k| *k == key).unwrap() as i64 + 1)
    }

    /// [`Ods::surrogate`] among the rows of one school year, offset by `year × scale`: ids of
    /// one year do not move when another year's rows are deleted.
    fn yearly<K: Ord>(code: &str, digits: usize, key: &K, all: &[K], year: i16, scale: i64) -> i64 {
        match Self::surrogate(code, digits, key, all) {
            n if n < 0 => n - i64::from(year) * scale,
            n => n,
        }
    }

    fn calendar_number(&self, code: &str, school: i32, year: i16) -> i64 {
        let all: Vec<(i32, String)> = self
            .calendars
            .iter()
            .filter(|(_, _, y)| *y == year)
            .map(|(c, s, _)| (*s, c.clone()))
            .collect();
        Self::yearly(code, 9, &(school, code.to_string()), &all, year, 10_000)
    }

    fn course_id(&self, code: &str, edorg: i32) -> i64 {
        let all: Vec<(i32, String)> = self.courses.iter().map(|c| (c.1, c.0.clone())).collect();
        Self::surrogate(code, 18, &(edorg, code.to_string()), &all)
    }

    /// [`Ods::surrogate`] among the sections of one school and year, offset by `year × 10^15 +
    /// school × 10^5`: a section added renumbers only its school's of that year.
    fn section_id(&self, key: &SectionKey) -> i64 {
        let all: Vec<SectionKey> = self
            .sections
            .iter()
            .filter(|s| s.0 == key.0 && s.1 == key.1)
            .map(|s| (s.0, s.1, s.2.clone(), s.3.clone(), s.4.clone()))
            .collect();
        match Self::surrogate(&key.4, 18, key, &all) {
            n if n < 0 => n - i64::from(key.1) * 1_000_000_000_000_000 - i64::from(key.0) * 100_000,
            n => n,
        }
    }

    /// The course of a section: at the section's school, a course with an identification code
    /// equal to its LocalCourseCode, else the course whose code equals it; the lowest id of
    /// several.
    fn section_course(&self, key: &SectionKey) -> Option<i64> {
        let by_identification = self
            .course_codes
            .iter()
            .filter(|c| c.3 == key.3 && c.1 == key.0)
            .map(|c| self.course_id(&c.0, c.1))
            .min();
        let by_code = self
            .courses
            .iter()
            .filter(|c| c.0 == key.3 && c.1 == key.0)
            .map(|c| self.course_id(&c.0, c.1))
            .min();
        by_identification.or(by_code)
    }

    /// Whether a calendar date has an "Instructional day" event.
    fn instructional(&self) -> HashSet<(String, i32, i16, NaiveDate)> {
        self.events
            .iter()
            .filter(|e| self.code(e.4) == "Instructional day")
            .map(|e| (e.0.clone(), e.1, e.2, e.3))
            .collect()
    }
}

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn expect_school(o: &Ods) -> Vec<Vec<V>> {
    o.schools
        .iter()
        .map(|id| {
            let (name, short, status, modified) = &o.edorg[id];
            let states = |physical: bool| {
                o.addresses
                    .iter()
                    .filter(|a| a.0 == *id && (!physical || o.code(a.1) == "Physical"))
                    .map(|a| o.code(a.2).to_string())
                    .min()
            };
            let region = states(true).or_else(|| states(false)).unwrap_or_default();
            let lowest = o
                .gradelevels
                .iter()
                .filter(|g| g.0 == *id)
                .filter_map(|g| grade_number(o.code(g.1)))
                .min();
            let level = match lowest {
                Some(0..=4) => t("ES"),
                Some(5..=8) => t("MS"),
                Some(9..=12) => t("HS"),
                _ => V::Null,
            };
            let active = !status.is_some_and(|s| matches!(o.code(s), "Closed" | "Inactive"));
            vec![
                i(*id),
                t(cut(name, 50)),
                t(region),
                level,
                t(cut(short.as_deref().unwrap_or(name), 10)),
                V::Bool(active),
                V::Ts(*modified),
            ]
        })
        .collect()
}

fn expect_schoolyear(o: &Ods) -> Vec<Vec<V>> {
    let current = o.current_year();
    o.schoolyear
        .iter()
        .map(|(y, (desc, cur, modified))| {
            vec![
                t(desc.clone()),
                t(format!("{:02}-{:02}", (y - 1) % 100, y % 100)),
                i(*y),
                V::Bool(*cur),
                opt(current, |c| i(c - y)),
                V::Ts(*modified),
            ]
        })
        .collect()
}

/// Per calendar: (first date, last date, latest LastModifiedDate).
fn calendar_spans(o: &Ods) -> BTreeMap<(String, i32, i16), (NaiveDate, NaiveDate, NaiveDateTime)> {
    let mut spans: BTreeMap<(String, i32, i16), (NaiveDate, NaiveDate, NaiveDateTime)> =
        BTreeMap::new();
    for (c, s, y, d, m) in &o.dates {
        let e = spans.entry((c.clone(), *s, *y)).or_insert((*d, *d, *m));
        e.0 = e.0.min(*d);
        e.1 = e.1.max(*d);
        e.2 = e.2.max(*m);
    }
    spans
}

fn expect_calendar(o: &Ods) -> Vec<Vec<V>> {
    let spans = calendar_spans(o);
    let instructional = o.instructional();
    o.dates
        .iter()
        .filter(|d| o.calendars.contains(&(d.0.clone(), d.1, d.2)))
        .map(|(c, s, y, d, m)| {
            let span = spans[&(c.clone(), *s, *y)];
            vec![
                i(o.calendar_number(c, *s, *y)),
                t(cut(c, 50)),
                V::Date(span.0),
                V::Date(span.1),
                V::Date(*d),
                V::Bool(instructional.contains(&(c.clone(), *s, *y, *d))),
                i(*y),
                t(format!("{}-{}", y - 1, y)),
                V::Ts(*m),
                i(*s),
            ]
        })
        .collect()
}

fn expect_calendaraggregate(o: &Ods, today: NaiveDate) -> Vec<Vec<V>> {
    let spans = calendar_spans(o);
    let instructional = o.instructional();
    o.calendars
        .iter()
        .filter_map(|(c, s, y)| {
            let span = spans.get(&(c.clone(), *s, *y))?;
            let days: Vec<NaiveDate> = instructional
                .iter()
                .filter(|k| k.0 == *c && k.1 == *s && k.2 == *y)
                .map(|k| k.3)
                .collect();
            Some(vec![
                i(o.calendar_number(c, *s, *y)),
                i(days.iter().filter(|d| **d < today).count() as i64),
                i(days.len() as i64),
                V::Date(span.0),
                V::Date(span.1),
                i(*y),
                V::Ts(span.2),
                i(*s),
                opt(days.iter().max(), |d| V::Date(*d)),
            ])
        })
        .collect()
}

fn expect_student(o: &Ods) -> Vec<Vec<V>> {
    o.students
        .iter()
        .map(|(usi, s)| {
            let races: std::collections::BTreeSet<&str> = o
                .races
                .iter()
                .filter(|r| r.0 == *usi)
                .map(|r| o.code(r.1))
                .collect();
            let race = match races.len() {
                0 => "Unknown".to_string(),
                1 => cut(races.iter().next().unwrap(), 50),
                _ => "Two or more races".to_string(),
            };
            let gender = match s.sex.map(|x| o.code(x)) {
                None | Some("Not Selected") => "Unknown".to_string(),
                Some(g) => cut(g, 10),
            };
            let email = o
                .emails
                .iter()
                .filter(|e| e.0 == *usi && e.1.chars().count() <= 50)
                .min_by_key(|e| (e.2 != Some(true), e.1.clone()))
                .map(|e| e.1.clone());
            let class_of = o
                .enrollments
                .iter()
                .filter(|e| e.usi == *usi)
                .max_by_key(|e| (e.entry, -e.school))
                .and_then(|e| e.class_of);
            vec![
                t(s.unique_id.clone()),
                V::Null,
                t(cut(&s.first, 50)),
                opt(s.middle.as_deref(), |m| t(cut(m, 50))),
                t(cut(&s.last, 50)),
                t(cut(&format!("{}, {}", s.last, s.first), 100)),
                V::Null,
                t(race),
                V::Bool(races.iter().any(|r| r.starts_with("Hispanic"))),
                t(gender),
                opt(email, V::Text),
                V::Null,
                V::Null,
                V::Ts(s.modified),
                V::Date(s.birth),
                opt(class_of, i),
            ]
        })
        .collect()
}

fn expect_enrollment(o: &Ods) -> Vec<Vec<V>> {
    let instructional = o.instructional();
    let spans = calendar_spans(o);
    let current = o.current_year();
    // One enrollment per student and entry date: the primary school's, else the lowest id.
    let mut chosen: BTreeMap<(i32, NaiveDate), &Enrollment> = BTreeMap::new();
    for e in o.enrollments.iter().filter(|e| e.year.is_some()) {
        let rank = |e: &Enrollment| (e.primary != Some(true), e.school);
        chosen
            .entry((e.usi, e.entry))
            .and_modify(|c| {
                if rank(e) < rank(c) {
                    *c = e
                }
            })
            .or_insert(e);
    }
    let mut rows = Vec::new();
    for e in chosen.values() {
        let year = e.year.unwrap();
        let calendar = o
            .calendars
            .iter()
            .filter(|(c, s, y)| {
                *s == e.school && *y == year && e.calendar.as_ref().is_none_or(|ec| ec == c)
            })
            .filter(|(c, s, y)| spans.contains_key(&(c.clone(), *s, *y)))
            .min_by_key(|(c, _, _)| c.clone());
        let Some((code, _, _)) = calendar else {
            continue;
        };
        let key = (code.clone(), e.school, year);
        let last_instructional = o
            .dates
            .iter()
            .filter(|d| (d.0.clone(), d.1, d.2) == key)
            .filter(|d| instructional.contains(&(d.0.clone(), d.1, d.2, d.3)))
            .map(|d| d.3)
            .max();
        let last_day = last_instructional.unwrap_or(spans[&key].1);
        let grade_code = o.code(e.grade);
        let number = grade_number(grade_code);
        let text = match number {
            Some(0) => "KG".to_string(),
            Some(n) => format!("{n:02}"),
            None if grade_code.to_lowercase().starts_with("pre") => "PK".to_string(),
            None => "UG".to_string(),
        };
        let most_recent = chosen
            .values()
            .filter(|x| x.usi == e.usi && x.year == e.year)
            .map(|x| x.entry)
            .max()
            == Some(e.entry);
        let descr = |d: Option<i32>, f: fn(&(String, Option<String>)) -> Option<String>| {
            opt(d.and_then(|d| f(&o.descriptor[&d])), |s| t(cut(&s, 50)))
        };
        let sy = o
            .schoolyear
            .get(&year)
            .map_or_else(|| format!("{}-{}", year - 1, year), |y| y.0.clone());
        rows.push(vec![
            t(o.students[&e.usi].unique_id.clone()),
            i(e.school),
            i(o.calendar_number(code, e.school, year)),
            t(text),
            i(number.unwrap_or(-1)),
            V::Date(e.entry),
            opt(e.exit, V::Date),
            V::Date(e.exit.unwrap_or(last_day)),
            descr(e.exit_type, |d| Some(d.0.clone())),
            descr(e.exit_type, |d| d.1.clone()),
            V::Bool(e.repeat == Some(true)),
            i(year),
            t(sy),
            V::Bool(e.exit.is_none() && current == Some(year)),
            V::Bool(most_recent),
            descr(e.entry_type, |d| Some(d.0.clone())),
            descr(e.entry_type, |d| d.1.clone()),
            V::Ts(e.modified),
            V::Bool(e.exit.is_none_or(|x| x >= last_day)),
        ]);
    }
    rows
}

fn expect_course(o: &Ods) -> Vec<Vec<V>> {
    let current = o.current_year();
    o.courses
        .iter()
        .map(|(code, edorg, title, subject, modified)| {
            let lea = o
                .course_codes
                .iter()
                .filter(|c| &c.0 == code && c.1 == *edorg && o.code(c.2) == "LEA course code")
                .map(|c| c.3.clone())
                .min();
            let id = o.course_id(code, *edorg);
            let last_year = o
                .sections
                .iter()
                .filter(|s| {
                    o.section_course(&(s.0, s.1, s.2.clone(), s.3.clone(), s.4.clone())) == Some(id)
                })
                .map(|s| s.1)
                .max();
            let calendar = last_year.and_then(|y| {
                o.calendars
                    .iter()
                    .filter(|c| c.1 == *edorg && c.2 == y)
                    .min_by_key(|c| c.0.clone())
            });
            vec![
                i(o.course_id(code, *edorg)),
                t(lea.unwrap_or_else(|| code.clone())),
                opt(calendar, |c| i(o.calendar_number(&c.0, c.1, c.2))),
                t(cut(title, 50)),
                opt(*subject, |s| t(cut(o.code(s), 50))),
                V::Bool(last_year.is_some() && last_year == current),
                opt(last_year, i),
                V::Ts(*modified),
            ]
        })
        .collect()
}

/// `ids.section`: each section whose course is found, by key, with its id, course and number.
fn expect_ids_section(o: &Ods) -> Vec<Vec<V>> {
    o.sections
        .iter()
        .filter_map(|(school, year, session, course, ident, modified, name)| {
            let key: SectionKey = (
                *school,
                *year,
                session.clone(),
                course.clone(),
                ident.clone(),
            );
            let course_id = o.section_course(&key)?;
            let number = o
                .sections
                .iter()
                .filter(|s| s.0 == *school && s.1 == *year && &s.2 == session && &s.3 == course)
                .filter(|s| s.4 < *ident)
                .count()
                + 1;
            Some(vec![
                i(*school),
                i(*year),
                t(session.clone()),
                t(course.clone()),
                t(ident.clone()),
                i(o.section_id(&key)),
                i(course_id),
                i(number as i64),
                opt(name.clone(), V::Text),
                V::Ts(*modified),
            ])
        })
        .collect()
}

/// `roster.section`: `ids.section`'s rows with their session's dates.
fn expect_section(o: &Ods) -> Vec<Vec<V>> {
    expect_ids_section(o)
        .into_iter()
        .map(|k| {
            let (school, year) = match (&k[0], &k[1]) {
                (V::Int(s), V::Int(y)) => (*s, *y),
                other => panic!("section key {other:?}"),
            };
            let session = match &k[2] {
                V::Text(s) => s.clone(),
                other => panic!("session {other:?}"),
            };
            let key = (
                i32::try_from(school).unwrap(),
                i16::try_from(year).unwrap(),
                session,
            );
            let dates = o.sessions.get(&key);
            vec![
                k[5].clone(),
                k[6].clone(),
                k[7].clone(),
                opt(dates, |d| V::Date(d.0)),
                opt(dates, |d| V::Date(d.1)),
                k[1].clone(),
                k[9].clone(),
                k[8].clone(),
            ]
        })
        .collect()
}

fn expect_studentroster(o: &Ods) -> Vec<Vec<V>> {
    o.student_sections
        .iter()
        .filter_map(|(key, usi, begin, end, modified)| {
            let course_id = o.section_course(key)?;
            Some(vec![
                i(o.section_id(key)),
                i(course_id),
                t(o.students[usi].unique_id.clone()),
                V::Date(*begin),
                opt(*end, V::Date),
                i(key.1),
                V::Ts(*modified),
            ])
        })
        .collect()
}

fn expect_staff(o: &Ods) -> Vec<Vec<V>> {
    o.staff
        .values()
        .map(|(id, first, last, modified)| {
            vec![
                t(id.clone()),
                t(cut(first, 50)),
                t(cut(last, 50)),
                V::Ts(*modified),
                t(cut(&format!("{last}, {first}"), 100)),
            ]
        })
        .collect()
}

fn expect_teacherstudentlinks(o: &Ods) -> Vec<Vec<V>> {
    let mut rows = Vec::new();
    for (key, usi, begin, end, modified) in &o.student_sections {
        let Some(course_id) = o.section_course(key) else {
            continue;
        };
        for (_, staff, sbegin, send, smodified) in o.staff_sections.iter().filter(|s| &s.0 == key) {
            rows.push(vec![
                i(o.section_id(key)),
                i(course_id),
                t(o.students[usi].unique_id.clone()),
                V::Date(*begin),
                opt(*end, V::Date),
                t(o.staff[staff].0.clone()),
                opt(*sbegin, V::Date),
                opt(*send, V::Date),
                i(key.1),
                V::Ts((*modified).max(*smodified)),
            ]);
        }
    }
    rows
}

/// Replicate the sample data into a fresh staging database and stop the replicator.
async fn replicated(students: u64, seed: u64) -> (Rig, i64) {
    let rig = Rig::new(students, seed).await;
    let rep = rig.connector.run();
    let v = wait_caught_up(&rig.source, &rig.target, TABLES, CATCH_UP).await;
    assert!(rep.terminate(Duration::from_secs(30)).success());
    (rig, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ic_model_matches_an_independent_computation() {
    // 1,100 students: three schools, one of each level.
    let (mut rig, version) = replicated(1100, 21).await;
    let models = load_ic();
    assert_eq!(models.models().len(), 13);
    models.install(&rig.target).await.unwrap();
    let refreshed = refresh_committed(&mut rig.target, &models, &models.inputs(), version).await;
    assert_eq!(refreshed.len(), 13, "{refreshed:?}");

    let o = Ods::read(&rig.target).await;
    let today: NaiveDate = rig
        .target
        .query_one("SELECT CURRENT_DATE", &[])
        .await
        .unwrap()
        .get(0);
    let mut problems = Vec::new();
    for m in models.models() {
        let expected = match m.name.as_str() {
            "schedule.school" => expect_school(&o),
            "schedule.schoolyear" => expect_schoolyear(&o),
            "schedule.calendar" => expect_calendar(&o),
            "schedule.calendaraggregate" => expect_calendaraggregate(&o, today),
            "studentdemographics.student" => expect_student(&o),
            "enrollment.studentenrollment" => expect_enrollment(&o),
            "roster.course" => expect_course(&o),
            "ids.section" => expect_ids_section(&o),
            "roster.section" => expect_section(&o),
            "roster.studentroster" => expect_studentroster(&o),
            "staff.staffidentity" | "staffidentity.staff" => expect_staff(&o),
            "roster.teacherstudentlinks" => expect_teacherstudentlinks(&o),
            other => panic!("no independent computation for model {other}"),
        };
        let actual = read_model(&rig.target, m).await;
        let rows = refreshed.iter().find(|r| r.model == m.name).unwrap().rows;
        assert_eq!(rows as usize, actual.len(), "{}: rows reported", m.name);
        problems.extend(compare(m, &actual, expected));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The sample data links sections to courses all three ways: through an identification code
    // that is the course code, through one that is not (a SIS's course number, the seed's
    // case), and through the course code alone.
    let ways: HashSet<(bool, bool)> = o
        .sections
        .iter()
        .map(|s| {
            (
                o.course_codes.iter().any(|c| c.3 == s.3 && c.1 == s.0),
                o.courses.iter().any(|c| c.0 == s.3 && c.1 == s.0),
            )
        })
        .collect();
    assert_eq!(
        ways,
        HashSet::from([(true, true), (true, false), (false, true)])
    );

    // The enrollment facts the reports lean on, stated directly.
    let enrollment = models
        .models()
        .iter()
        .find(|m| m.name == "enrollment.studentenrollment")
        .unwrap();
    let rows = read_model(&rig.target, enrollment).await;
    let col = |name: &str| {
        enrollment
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap()
    };
    let last_student_day = ods_sim::edfi::plan::last_student_day();
    let calendar_last_date = o.dates.iter().map(|d| d.3).max().unwrap();
    let mut per_student_year: HashMap<(V, V), usize> = HashMap::new();
    for r in rows.values() {
        *per_student_year
            .entry((r[col("studentnumber")].clone(), r[col("endyear")].clone()))
            .or_default() += 1;
        let n = match &r[col("numericgradelevel")] {
            V::Int(n) => *n,
            other => panic!("numericgradelevel {other:?}"),
        };
        let text = &r[col("gradelevel")];
        assert!((0..=12).contains(&n), "sample grades are K-12: {r:?}");
        assert_eq!(
            *text,
            t(if n == 0 {
                "KG".into()
            } else {
                format!("{n:02}")
            })
        );
        let active = r[col("activeenrollment")] == V::Bool(true);
        let current = r[col("endyear")] == i(ods_sim::edfi::plan::SCHOOL_YEAR);
        if current {
            assert_eq!(active, r[col("enrollmentenddate")] == V::Null, "{r:?}");
        } else {
            assert!(
                !active,
                "only the current year's enrollments are active: {r:?}"
            );
        }
        // Without a withdraw date the enrollment exits on its calendar's last instructional
        // day, not on the calendar's last date (the seed's rule): here that is a teacher-only
        // day after it.
        if active {
            assert_eq!(
                r[col("enrollmentexitdate")],
                V::Date(last_student_day),
                "{r:?}"
            );
            assert_eq!(r[col("completedschoolyear")], V::Bool(true), "{r:?}");
        }
    }
    assert!(calendar_last_date > last_student_day);
    // Three school years: every student this year, most in the earlier ones too.
    let students: HashSet<&V> = per_student_year.keys().map(|k| &k.0).collect();
    assert_eq!(students.len(), o.students.len());
    let years: HashSet<&V> = per_student_year.keys().map(|k| &k.1).collect();
    assert_eq!(years.len(), 3, "{years:?}");
    assert!(per_student_year.values().all(|n| *n == 1));

    // Freshness: one row per refreshed model and per changed table, at the flush's version.
    let fresh: Vec<(String, String, i64)> = rig
        .target
        .query(
            "SELECT name, kind, source_version FROM edfi_cdc.freshness ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        fresh.len(),
        models.models().len() + models.inputs().len(),
        "{fresh:?}"
    );
    assert!(fresh.iter().all(|f| f.2 == version));
    assert!(fresh
        .iter()
        .any(|f| f.0 == "enrollment.studentenrollment" && f.1 == "model"));
    assert!(fresh
        .iter()
        .any(|f| f.0 == "edfi.student" && f.1 == "table"));

    // A flush that changed only edfi.staff refreshes only the staff models, and leaves the
    // other models' freshness where it was.
    let changed: HashSet<String> = ["edfi.staff".to_string()].into();
    let refreshed = refresh_committed(&mut rig.target, &models, &changed, version + 1).await;
    let names: HashSet<&str> = refreshed.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(
        names,
        HashSet::from([
            "staff.staffidentity",
            "staffidentity.staff",
            "roster.teacherstudentlinks"
        ])
    );
    let student_version: i64 = rig
        .target
        .query_one(
            "SELECT source_version FROM edfi_cdc.freshness WHERE name = 'studentdemographics.student'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(student_version, version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_check_passes_on_the_built_target_and_names_a_wrong_column() {
    let (mut rig, version) = replicated(60, 4).await;
    let models = load_ic();
    models.install(&rig.target).await.unwrap();
    refresh_committed(&mut rig.target, &models, &models.inputs(), version).await;
    assert_eq!(models.check(&rig.target).await, Vec::<String>::new());

    let cli = |url: &str| {
        rig.connector
            .command(&["models", "check"])
            .arg("--models-dir")
            .arg(shipped_models_dir())
            .arg("--target-url")
            .arg(url)
            .output()
            .unwrap()
    };
    let out = cli(&rig.staging.url());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("PASS model enrollment.studentenrollment"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");

    rig.target
        .batch_execute(
            "ALTER TABLE enrollment.studentenrollment ALTER COLUMN gradelevel TYPE varchar(2)",
        )
        .await
        .unwrap();
    let out = cli(&rig.staging.url());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(
            "FAIL model enrollment.studentenrollment: column gradelevel: target type varchar(2), model declares varchar(4)"
        ),
        "{stdout}"
    );
    // Nothing was changed by the checks.
    let ty: String = rig
        .target
        .query_one(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'enrollment.studentenrollment'::regclass AND attname = 'gradelevel'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "character varying(2)");
}

/// A model file `name` in group `ic` of a fresh models directory under the system's temporary
/// directory (removed when the guard goes).
struct ModelDir(PathBuf);

impl ModelDir {
    fn with(file: &str, text: &str) -> ModelDir {
        let dir = std::env::temp_dir().join(unique("edfi_cdc_models"));
        std::fs::create_dir_all(dir.join("ic")).unwrap();
        std::fs::write(dir.join("ic").join(file), text).unwrap();
        ModelDir(dir)
    }
}

impl Drop for ModelDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// The `lastname` column of the test model's table, in key order.
async fn last_names(client: &Client) -> Vec<String> {
    client
        .query("SELECT lastname FROM test.names ORDER BY staffnumber", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Refresh `models` in a transaction of `client` and commit it.
async fn refresh_committed(
    client: &mut Client,
    models: &Models,
    changed: &HashSet<String>,
    version: i64,
) -> Vec<edfi_cdc::models::Refreshed> {
    let tx = client.transaction().await.unwrap();
    let done = models.refresh(&tx, changed, version, None).await.unwrap();
    tx.commit().await.unwrap();
    done
}

/// Refresh `models` as a sink would: the first attempt meets a value too long for its column
/// and fails with the retryable overflow of `test.names`; the attempt after it is the result.
async fn refresh_after_overflow(
    client: &mut Client,
    models: &Models,
    changed: &HashSet<String>,
    version: i64,
) -> Result<Vec<edfi_cdc::models::Refreshed>, edfi_cdc::models::RefreshError> {
    let tx = client.transaction().await.unwrap();
    let first = models
        .refresh(&tx, changed, version, None)
        .await
        .unwrap_err();
    assert!(
        matches!(first, edfi_cdc::models::RefreshError::Overflow { ref model } if model == "test.names"),
        "{first}"
    );
    drop(tx);
    let tx = client.transaction().await.unwrap();
    let done = models.refresh(&tx, changed, version, None).await?;
    tx.commit().await.unwrap();
    Ok(done)
}

/// A value longer than its reporting column: the first refresh fails with the retryable
/// overflow, and the next one cuts it (and says so) — or, with `on_overflow: fail`, names model,
/// column and key and fails.
#[tokio::test]
async fn a_value_too_long_for_its_column_is_cut_or_fails_as_the_model_says() {
    let db = TestDb::create("overflow").await;
    let mut client = connect(&db.url()).await;
    client
        .batch_execute(
            "CREATE SCHEMA edfi; \
             CREATE TABLE edfi.staff (staffuniqueid varchar(32) PRIMARY KEY, lastsurname varchar(75)); \
             INSERT INTO edfi.staff VALUES ('s1', 'Short'), ('s2', 'Featherstonehaugh'), \
             ('s3', 'Ñúñez-Álvarez'), ('s4', 'Достоевский'), ('s5', '東京都千代田区丸の内');",
        )
        .await
        .unwrap();
    let model = |policy: &str| {
        format!(
            "-- model: test.names\n-- inputs: edfi.staff\n{policy}\
             CREATE TABLE test.names (\n    staffnumber varchar(32) NOT NULL,\n    lastname varchar(8),\n    \
             PRIMARY KEY (staffnumber)\n);\n\
             SELECT s.staffuniqueid AS staffnumber, s.lastsurname AS lastname FROM edfi.staff s;\n"
        )
    };
    let configured: HashSet<String> = ["edfi.staff".to_string()].into();
    let changed: HashSet<String> = ["edfi.staff".to_string()].into();

    let dir = ModelDir::with("test.names.sql", &model(""));
    let models = Models::load(&dir.0, &["ic"], &configured)
        .unwrap()
        .on_postgres();
    models.install(&client).await.unwrap();
    let done = refresh_after_overflow(&mut client, &models, &changed, 1)
        .await
        .unwrap();
    assert_eq!((done[0].rows, done[0].truncated), (5, 4), "{done:?}");
    assert_eq!(
        last_names(&client).await,
        [
            "Short",
            "Feathers",
            "Ñúñez-Ál",
            "Достоевс",
            "東京都千代田区丸"
        ]
    );

    // Redshift's varchar(n) counts bytes: the same values are cut to whole characters within 8
    // bytes (PostgreSQL evaluates the expression the Redshift path uses).
    let models = Models::load(&dir.0, &["ic"], &configured).unwrap();
    let done = refresh_after_overflow(&mut client, &models, &changed, 1)
        .await
        .unwrap();
    assert_eq!(done[0].truncated, 4, "{done:?}");
    let cut = last_names(&client).await;
    assert_eq!(cut, ["Short", "Feathers", "Ñúñe", "До", "東京"]);
    assert!(cut.iter().all(|c| c.len() <= 8), "{cut:?}");

    let dir = ModelDir::with("test.names.sql", &model("-- on_overflow: fail\n"));
    let models = Models::load(&dir.0, &["ic"], &configured)
        .unwrap()
        .on_postgres();
    let failed = refresh_after_overflow(&mut client, &models, &changed, 2)
        .await
        .unwrap_err();
    assert_eq!(
        failed.to_string(),
        "reporting model test.names: column lastname (varchar(8)): a value of 17 characters at \
         staffnumber=s2 (on_overflow = \"fail\")"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_model_definition_rebuilds_it_whole_without_its_kept_years() {
    let (mut rig, version) = replicated(600, 31).await;
    let dir = std::env::temp_dir().join(unique("edfi_cdc_models"));
    std::fs::create_dir_all(dir.join("ic")).unwrap();
    for f in std::fs::read_dir(shipped_models_dir().join("ic")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join("ic").join(f.file_name().unwrap())).unwrap();
    }
    let guard = ModelDir(dir.clone());
    let load = || Models::load(&guard.0, &["ic"], &ic_tables()).unwrap_or_else(|e| panic!("{e}"));
    let models = load();
    models.install(&rig.target).await.unwrap();
    refresh_committed(&mut rig.target, &models, &models.inputs(), version).await;
    let before = count_2024(&rig.target).await;
    assert!(before > 0);

    // 2024 archived: its enrollments are kept (a closed year).
    rig.target
        .batch_execute("DELETE FROM edfi.studentschoolassociation WHERE schoolyear = 2024")
        .await
        .unwrap();
    let changed: HashSet<String> = ["edfi.studentschoolassociation".to_string()].into();
    refresh_committed(&mut rig.target, &models, &changed, version + 1).await;
    assert_eq!(count_2024(&rig.target).await, before);

    // A new definition of the model (a comment alone is not one): rebuilt whole at the next
    // refresh, with nothing changed, and without the kept rows, whose keys it may have changed.
    let file = dir.join("ic/enrollment.studentenrollment.sql");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("-- a note\n{text}")).unwrap();
    let done = refresh_committed(&mut rig.target, &load(), &HashSet::new(), version + 2).await;
    assert!(done.is_empty(), "a comment is no new definition: {done:?}");
    std::fs::write(
        &file,
        text.replace(
            "WHERE a.schoolyear IS NOT NULL",
            "WHERE a.schoolyear IS NOT NULL AND 1 = 1",
        ),
    )
    .unwrap();
    let done = refresh_committed(&mut rig.target, &load(), &HashSet::new(), version + 3).await;
    let names: Vec<&str> = done.iter().map(|d| d.model.as_str()).collect();
    assert_eq!(names, ["enrollment.studentenrollment"]);
    assert!(!done[0].incremental && done[0].kept == 0, "{done:?}");
    assert_eq!(count_2024(&rig.target).await, 0);
    let done = refresh_committed(&mut rig.target, &load(), &HashSet::new(), version + 4).await;
    assert!(done.is_empty(), "recorded: {done:?}");
}

/// Rows of 2024 in `enrollment.studentenrollment`.
async fn count_2024(c: &Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM enrollment.studentenrollment WHERE endyear = 2024",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_input_that_keeps_deleted_rows_is_read_without_them() {
    let (mut rig, version) = replicated(600, 33).await;
    let models = load_ic();
    models.install(&rig.target).await.unwrap();
    let schools: Vec<i32> = rig
        .target
        .query("SELECT schoolid FROM edfi.school ORDER BY 1 LIMIT 2", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // As a sink with deletes = "soft" carries it: one live row, one deleted.
    rig.target
        .batch_execute(&format!(
            "CREATE SCHEMA custom;
             CREATE TABLE custom.schoolmanualattributes (schoolnumber varchar(20), schoolabbreviation varchar(10),
                 active boolean, edfi_cdc_deleted_at timestamp);
             INSERT INTO custom.schoolmanualattributes VALUES
                 ('{}', 'LIVE', true, NULL), ('{}', 'GONE', true, '2025-01-01 00:00:00');",
            schools[0], schools[1]
        ))
        .await
        .unwrap();
    refresh_committed(&mut rig.target, &models, &models.inputs(), version).await;
    let abbreviation = |school: i32| {
        let target = &rig.target;
        async move {
            target
                .query_one(
                    "SELECT schoolabbreviation FROM schedule.school WHERE schoolnumber = $1",
                    &[&school],
                )
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(abbreviation(schools[0]).await, "LIVE");
    assert_ne!(abbreviation(schools[1]).await, "GONE");
}
