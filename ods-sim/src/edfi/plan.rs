//! The shape of the sample data set, derived deterministically from the seed and the number of
//! students: the school network, its calendar, courses, sections, staff and assessments, and
//! each student's attributes (computed on demand from a per-student random stream, so every
//! student table can be generated independently and in any order).

use chrono::{Datelike, NaiveDate, NaiveDateTime, Weekday};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

/// The current school year (Ed-Fi convention: 2025 = 2024–2025): the workload changes only its
/// rows.
pub const SCHOOL_YEAR: i16 = 2025;
/// The earlier school years of the sample data, each with calendars, sessions, sections and the
/// enrollments of the students who were in a grade of their school then (the workbooks read
/// `yearsago` 0, 1 and 2). Assessments are of the current year only.
pub const PRIOR_YEARS: [i16; 2] = [2023, 2024];

/// Every school year of the sample data, earliest first.
pub fn school_years() -> [i16; 3] {
    [PRIOR_YEARS[0], PRIOR_YEARS[1], SCHOOL_YEAR]
}

/// How far `year`'s dates lie from the current year's: whole weeks, so weekdays stay weekdays.
fn year_shift(year: i16) -> chrono::Duration {
    chrono::Duration::weeks(-52 * i64::from(SCHOOL_YEAR - year))
}
/// The local education agency (the charter network) every school belongs to.
pub const LEA_ID: i32 = 255901;
/// Namespace of the assessments the Illuminate pipeline reads.
pub const ILLUMINATE_NS: &str = "uri://illuminateed.com";
/// Namespace of the state assessments (present in the ODS, filtered out by the pipeline).
pub const STATE_NS: &str = "uri://ed-fi.org/Assessment";
/// Students per school (the network grows by schools, not by school size).
pub const STUDENTS_PER_SCHOOL: u64 = 500;
/// Target section size.
const SECTION_SIZE: u64 = 25;
/// Items per Illuminate assessment.
pub const ITEMS: usize = 6;
/// The two subjects every student takes each semester: (course code prefix, academic subject).
pub const SUBJECTS: [(&str, &str); 2] = [("ELA", "English Language Arts"), ("MATH", "Mathematics")];
/// Illuminate interim assessments per grade and subject.
pub const INTERIMS: u8 = 3;
/// Scale score of a raw score of 0 and points per raw point.
const SCALE_BASE: u32 = 150;
const SCALE_STEP: u32 = 25;

/// `CreateDate`/`LastModifiedDate` of every generated row.
pub fn load_time() -> NaiveDateTime {
    date(2024, 8, 12).and_hms_opt(3, 0, 0).expect("valid time")
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

/// First and last day of the calendar (teacher days included).
pub fn calendar_range() -> (NaiveDate, NaiveDate) {
    (date(2024, 8, 19), date(2025, 6, 17))
}

/// The first day students attend.
pub fn first_student_day() -> NaiveDate {
    date(2024, 8, 26)
}

/// The last day students attend; the calendar goes on with teacher-only days, so its last date
/// is not its last instructional day.
pub fn last_student_day() -> NaiveDate {
    date(2025, 6, 13)
}

/// A semester: session name, term code, begin and end date.
pub struct Semester {
    pub name: &'static str,
    pub term: &'static str,
    pub letter: char,
    pub begin: NaiveDate,
    pub end: NaiveDate,
}

pub fn semesters() -> [Semester; 2] {
    semesters_of(SCHOOL_YEAR)
}

/// The semesters of one of [`school_years`].
pub fn semesters_of(year: i16) -> [Semester; 2] {
    let (fall, spring) = match year {
        2023 => ("2022-2023 Fall Semester", "2022-2023 Spring Semester"),
        2024 => ("2023-2024 Fall Semester", "2023-2024 Spring Semester"),
        _ => ("2024-2025 Fall Semester", "2024-2025 Spring Semester"),
    };
    let shift = year_shift(year);
    [
        Semester {
            name: fall,
            term: "Fall Semester",
            letter: 'F',
            begin: first_student_day() + shift,
            end: date(2025, 1, 17) + shift,
        },
        Semester {
            name: spring,
            term: "Spring Semester",
            letter: 'S',
            begin: date(2025, 1, 21) + shift,
            end: last_student_day() + shift,
        },
    ]
}

/// The calendar event of a weekday of the school calendar (weekends are not calendar dates).
pub fn calendar_event(day: NaiveDate) -> Option<&'static str> {
    if matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        return None;
    }
    let (first, last) = calendar_range();
    if day < first || day > last {
        return None;
    }
    let holidays = [
        (date(2024, 9, 2), date(2024, 9, 2)),
        (date(2024, 10, 14), date(2024, 10, 14)),
        (date(2024, 11, 11), date(2024, 11, 11)),
        (date(2024, 11, 27), date(2024, 11, 29)),
        (date(2024, 12, 23), date(2025, 1, 1)),
        (date(2025, 1, 20), date(2025, 1, 20)),
        (date(2025, 2, 17), date(2025, 2, 21)),
        (date(2025, 4, 14), date(2025, 4, 18)),
        (date(2025, 5, 26), date(2025, 5, 26)),
    ];
    Some(if holidays.iter().any(|(a, b)| day >= *a && day <= *b) {
        "Holiday"
    } else if day < first_student_day()
        || day > last_student_day()
        || day == date(2024, 11, 5)
        || day == date(2025, 3, 14)
    {
        "Teacher only day"
    } else {
        "Instructional day"
    })
}

/// All calendar dates with their event, in date order.
pub fn calendar_dates() -> Vec<(NaiveDate, &'static str)> {
    let (first, last) = calendar_range();
    first
        .iter_days()
        .take_while(|d| *d <= last)
        .filter_map(|d| calendar_event(d).map(|e| (d, e)))
        .collect()
}

/// The calendar dates of one of [`school_years`]: the current year's, moved by whole weeks.
pub fn calendar_dates_of(year: i16) -> Vec<(NaiveDate, &'static str)> {
    let shift = year_shift(year);
    calendar_dates()
        .into_iter()
        .map(|(d, e)| (d + shift, e))
        .collect()
}

pub fn instructional_days(from: NaiveDate, to: NaiveDate) -> usize {
    school_years()
        .into_iter()
        .flat_map(calendar_dates_of)
        .filter(|(d, e)| *d >= from && *d <= to && *e == "Instructional day")
        .count()
}

/// Course code of a grade and subject, e.g. `MATH-05`, `ELA-K`.
pub fn course_code(subject: &str, grade: u8) -> String {
    if grade == 0 {
        format!("{subject}-K")
    } else {
        format!("{subject}-{grade:02}")
    }
}

/// Inverse of [`course_code`]: (subject index into [`SUBJECTS`], grade).
pub fn parse_course_code(code: &str) -> Option<(usize, u8)> {
    let (subject, grade) = code.split_once('-')?;
    let s = SUBJECTS.iter().position(|(p, _)| *p == subject)?;
    let g = if grade == "K" { 0 } else { grade.parse().ok()? };
    Some((s, g))
}

/// A middle school's numeric "LEA course code" of a grade and subject index, e.g. `105`.
fn numbered_course(subject: usize, grade: u8) -> String {
    format!("{}{grade:02}", subject + 1)
}

/// (subject index, grade) of a section's `LocalCourseCode`: a course code, or a middle
/// school's numeric LEA course code.
pub fn parse_local_course_code(code: &str) -> Option<(usize, u8)> {
    if let Some(parsed) = parse_course_code(code) {
        return Some(parsed);
    }
    let (subject, grade) = (code.get(..1)?, code.get(1..)?);
    let s = subject.parse::<usize>().ok()?.checked_sub(1)?;
    let g: u8 = grade.parse().ok()?;
    (s < SUBJECTS.len() && grade.len() == 2 && numbered_course(s, g) == code).then_some((s, g))
}

pub fn grade_name(grade: u8) -> &'static str {
    const NAMES: [&str; 13] = [
        "Kindergarten",
        "Grade 1",
        "Grade 2",
        "Grade 3",
        "Grade 4",
        "Grade 5",
        "Grade 6",
        "Grade 7",
        "Grade 8",
        "Grade 9",
        "Grade 10",
        "Grade 11",
        "Grade 12",
    ];
    NAMES[grade as usize]
}

/// `StudentUniqueId` of a `StudentUSI`.
pub fn student_unique_id(usi: i32) -> String {
    format!("{}", STUDENT_UNIQUE_ID_BASE + i64::from(usi))
}

/// [`student_unique_id`] is this plus the student's number.
pub const STUDENT_UNIQUE_ID_BASE: i64 = 600_000;

/// `AssessmentIdentifier` of an Illuminate interim assessment.
pub fn assessment_id(subject: usize, grade: u8, interim: u8) -> String {
    format!(
        "IL-{SCHOOL_YEAR}-{}-INT{interim}",
        course_code(SUBJECTS[subject].0, grade)
    )
}

/// `LearningStandardId` of the k-th standard of a grade and subject, with its namespace.
pub fn learning_standard(subject: usize, grade: u8, k: usize) -> (String, &'static str) {
    let g = if grade == 0 {
        "K".to_string()
    } else {
        grade.to_string()
    };
    if subject == 0 {
        (
            format!("CCSS.ELA-LITERACY.RL.{g}.{}", k + 1),
            "uri://illuminateed.com/LearningStandards.xml",
        )
    } else {
        (
            format!("CCSS.MATH.CONTENT.{g}.OA.{}", k + 1),
            "uri://academicbenchmarks.com/LearningStandards.xml",
        )
    }
}

/// Scale score of a raw score.
pub fn scale_score(raw: u32) -> u32 {
    SCALE_BASE + SCALE_STEP * raw
}

/// Performance levels of the raw score: (code, minimum, maximum), best first.
pub fn performance_levels() -> [(&'static str, u32, u32); 4] {
    [
        ("Advanced", 6, 6),
        ("Proficient", 4, 5),
        ("Basic", 2, 3),
        ("Below Basic", 0, 1),
    ]
}

pub fn performance_level(raw: u32) -> &'static str {
    performance_levels()
        .iter()
        .find(|(_, lo, hi)| raw >= *lo && raw <= *hi)
        .map(|(c, _, _)| *c)
        .expect("raw score within 0..=ITEMS")
}

/// A random stream for one purpose and one entity: independent of every other stream.
pub fn stream(seed: u64, purpose: &str, entity: u64) -> ChaCha8Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ h);
    r.set_stream(entity);
    r
}

pub fn random_uuid(rng: &mut impl Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.gen()).into_uuid()
}

/// Given names (with their ASCII form for e-mail addresses).
const FIRST_NAMES: &[(&str, &str)] = &[
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Aaliyah", "aaliyah"),
    ("Liam", "liam"),
    ("Sofía", "sofia"),
    ("Mateo", "mateo"),
    ("Amara", "amara"),
    ("Jayden", "jayden"),
    ("Chloé", "chloe"),
    ("Malik", "malik"),
    ("Ana", "ana"),
    ("Noah", "noah"),
    ("Imani", "imani"),
    ("Mía", "mia"),
    ("Darnell", "darnell"),
    ("Olivia", "olivia"),
    ("Santiago", "santiago"),
    ("Nia", "nia"),
    ("Ethan", "ethan"),
    ("Genesis", "genesis"),
    ("Bảo", "bao"),
    ("Khadijah", "khadijah"),
    ("Andrés", "andres"),
    ("Emma", "emma"),
    ("Jamal", "jamal"),
    ("Renée", "renee"),
    ("Élodie", "elodie"),
    ("Xavier", "xavier"),
    ("Björn", "bjorn"),
    ("Ava", "ava"),
];

const LAST_NAMES: &[(&str, &str)] = &[
    ("García", "garcia"),
    ("Nguyễn", "nguyen"),
    ("Johnson", "johnson"),
    ("Williams", "williams"),
    ("Rodríguez", "rodriguez"),
    ("Smith", "smith"),
    ("Brown", "brown"),
    ("Pérez", "perez"),
    ("Jackson", "jackson"),
    ("Martínez", "martinez"),
    ("Davis", "davis"),
    ("Hernández", "hernandez"),
    ("Thompson", "thompson"),
    ("Öztürk", "ozturk"),
    ("Okafor", "okafor"),
    ("Lê", "le"),
    ("Robinson", "robinson"),
    ("Muñoz", "munoz"),
    ("Washington", "washington"),
    ("O'Brien", "obrien"),
    ("Castillo", "castillo"),
    ("Diallo", "diallo"),
    ("Kowalski", "kowalski"),
    ("Søndergaard", "sondergaard"),
    ("Harris", "harris"),
];

const CITIES: &[(&str, &str, &str)] = &[
    ("New Haven", "CT", "06511"),
    ("Hartford", "CT", "06106"),
    ("Bridgeport", "CT", "06604"),
    ("Brooklyn", "NY", "11216"),
    ("Providence", "RI", "02907"),
];

const SCHOOL_PLACES: &[&str] = &[
    "Amistad",
    "Elm City",
    "Bushwick",
    "Crown Heights",
    "Hartford",
    "Brownsville",
    "Providence",
    "Peñasco",
    "Linden",
    "Bridgeport",
    "East New York",
    "Fairhaven",
];

pub fn random_first_name(rng: &mut impl Rng) -> (&'static str, &'static str) {
    *FIRST_NAMES.choose(rng).expect("names")
}

pub fn random_last_name(rng: &mut impl Rng) -> (&'static str, &'static str) {
    *LAST_NAMES.choose(rng).expect("names")
}

/// School level: grades served and the name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Elementary,
    Middle,
    High,
}

impl Level {
    pub fn grades(self) -> std::ops::RangeInclusive<u8> {
        match self {
            Level::Elementary => 0..=4,
            Level::Middle => 5..=8,
            Level::High => 9..=12,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Level::Elementary => "Elementary School",
            Level::Middle => "Middle School",
            Level::High => "High School",
        }
    }
}

#[derive(Debug, Clone)]
pub struct School {
    pub index: usize,
    pub id: i32,
    pub name: String,
    pub short_name: String,
    pub level: Level,
    pub city: (&'static str, &'static str, &'static str),
    pub street: String,
    /// Students initially enrolled.
    pub students: u64,
}

impl School {
    pub fn calendar_code(&self) -> String {
        self.calendar_code_of(SCHOOL_YEAR)
    }

    pub fn calendar_code_of(&self, year: i16) -> String {
        format!("{}-{year}", self.id)
    }

    /// Sections per course and semester.
    pub fn sections_per_course(&self) -> u64 {
        let per_grade = self.students / self.level.grades().count() as u64;
        per_grade.div_ceil(SECTION_SIZE).max(1)
    }

    /// The "LEA course code" this school gives the course of `subject` and `grade`, if any. The
    /// three levels link sections to courses the three ways an ODS does: elementary schools'
    /// LEA codes are the course codes, middle schools number their courses (`105`, as a SIS
    /// does), high schools have state codes only.
    pub fn lea_course_code(&self, subject: usize, grade: u8) -> Option<String> {
        match self.level {
            Level::Elementary => Some(course_code(SUBJECTS[subject].0, grade)),
            Level::Middle => Some(numbered_course(subject, grade)),
            Level::High => None,
        }
    }

    /// The `LocalCourseCode` of this school's sections of a course: its LEA course code where it
    /// has one, else its course code.
    pub fn local_course_code(&self, subject: usize, grade: u8) -> String {
        self.lea_course_code(subject, grade)
            .unwrap_or_else(|| course_code(SUBJECTS[subject].0, grade))
    }

    pub fn section_identifier(&self, course: &str, sem: &Semester, n: u64) -> String {
        format!("{}-{course}-{}{:02}", self.id, sem.letter, n + 1)
    }

    /// `StaffUSI` of the teacher of a grade and subject at this school (see [`Plan::staff`]).
    pub fn teacher(&self, grade: u8, subject: usize) -> i32 {
        let g = (grade - *self.level.grades().start()) as usize;
        staff_usi(self.index, g, subject)
    }
}

/// Staff slots per school: one per grade (at most 5) and subject.
const STAFF_GRADE_SLOTS: usize = 5;

fn staff_usi(school: usize, slot: usize, subject: usize) -> i32 {
    (school * STAFF_GRADE_SLOTS * SUBJECTS.len() + slot * SUBJECTS.len() + subject + 1) as i32
}

/// A staff member: `StaffUSI`, school index, and the grade and subject index taught (`None` for
/// the non-teaching staff of schools with fewer grades than slots).
pub struct StaffMember {
    pub usi: i32,
    pub school: usize,
    pub teaches: Option<(u8, usize)>,
}

/// The data set: network, calendar, courses, sections, staff, assessments.
pub struct Plan {
    pub seed: u64,
    pub students: u64,
    pub schools: Vec<School>,
}

impl Plan {
    pub fn new(seed: u64, students: u64) -> Plan {
        let n = students.div_ceil(STUDENTS_PER_SCHOOL).max(1) as usize;
        let mut rng = stream(seed, "schools", 0);
        let schools = (0..n)
            .map(|i| {
                let level = [Level::Elementary, Level::Middle, Level::High][i % 3];
                let place = SCHOOL_PLACES[(i / 3) % SCHOOL_PLACES.len()];
                let campus = i / (3 * SCHOOL_PLACES.len());
                let place = if campus == 0 {
                    place.to_string()
                } else {
                    format!("{place} {}", campus + 1)
                };
                let city = *CITIES.choose(&mut rng).expect("cities");
                School {
                    index: i,
                    id: LEA_ID * 1000 + i as i32 + 1,
                    name: format!("Achievement {place} {}", level.suffix()),
                    short_name: format!("{place} {}", &level.suffix()[..1]),
                    level,
                    city,
                    street: format!(
                        "{} {} Street",
                        rng.gen_range(10..2000),
                        ["Elm", "Dixwell", "Main", "Fulton", "Broad", "Chapel"]
                            [rng.gen_range(0..6)]
                    ),
                    students: (students + (n - 1 - i) as u64) / n as u64,
                }
            })
            .collect();
        Plan {
            seed,
            students,
            schools,
        }
    }

    /// All staff, in `StaffUSI` order: per school, grade slots × subjects (slots beyond the
    /// school's grades are non-teaching staff).
    pub fn staff(&self) -> Vec<StaffMember> {
        let mut out = Vec::new();
        for s in &self.schools {
            let grades: Vec<u8> = s.level.grades().collect();
            for slot in 0..STAFF_GRADE_SLOTS {
                for subject in 0..SUBJECTS.len() {
                    out.push(StaffMember {
                        usi: staff_usi(s.index, slot, subject),
                        school: s.index,
                        teaches: grades.get(slot).map(|g| (*g, subject)),
                    });
                }
            }
        }
        out
    }

    /// The student with this `StudentUSI` (1-based, up to `students`).
    pub fn student(&self, usi: i32) -> StudentPlan {
        StudentPlan::new(self.seed, usi, self.school_of(usi))
    }

    fn school_of(&self, usi: i32) -> &School {
        &self.schools[(usi as usize - 1) % self.schools.len()]
    }

    /// The student's enrollments of [`PRIOR_YEARS`]: a student who came up from the previous
    /// year (not a transfer) was at the same school in every earlier year whose grade the
    /// school has, the whole year, in one section of each subject per semester.
    pub fn prior_enrollments(&self, p: &StudentPlan) -> Vec<PriorEnrollment> {
        if p.entry_type != "Next year school" {
            return Vec::new();
        }
        let school = self.school_of(p.usi);
        let mut rng = stream(self.seed, "student-prior", p.usi as u64);
        let mut out = Vec::new();
        for year in PRIOR_YEARS {
            let back = (SCHOOL_YEAR - year) as u8;
            let Some(grade) = p.grade.checked_sub(back) else {
                continue;
            };
            if !school.level.grades().contains(&grade) {
                continue;
            }
            let mut sections = Vec::new();
            for sem in semesters_of(year) {
                for (k, (prefix, _)) in SUBJECTS.iter().enumerate() {
                    let course = course_code(prefix, grade);
                    let n = rng.gen_range(0..school.sections_per_course());
                    sections.push(SectionEnrollment {
                        section: school.section_identifier(&course, &sem, n),
                        course: school.local_course_code(k, grade),
                        session: sem.name,
                        begin: sem.begin,
                        end: sem.end,
                    });
                }
            }
            out.push(PriorEnrollment {
                year,
                grade,
                entry: semesters_of(year)[0].begin,
                calendar_code: school.calendar_code_of(year),
                sections,
            });
        }
        out
    }
}

/// A student's enrollment in one of [`PRIOR_YEARS`].
pub struct PriorEnrollment {
    pub year: i16,
    pub grade: u8,
    pub entry: NaiveDate,
    pub calendar_code: String,
    pub sections: Vec<SectionEnrollment>,
}

/// One section enrollment of a student.
pub struct SectionEnrollment {
    /// The section's `LocalCourseCode`.
    pub course: String,
    pub section: String,
    pub session: &'static str,
    pub begin: NaiveDate,
    pub end: NaiveDate,
}

/// Everything about one student in the initial data set.
pub struct StudentPlan {
    pub usi: i32,
    pub school_id: i32,
    pub calendar_code: String,
    pub grade: u8,
    pub first: (&'static str, &'static str),
    pub middle: Option<&'static str>,
    pub last: (&'static str, &'static str),
    pub birth_date: NaiveDate,
    pub sex: &'static str,
    pub races: Vec<&'static str>,
    pub emails: Vec<(&'static str, String, bool)>,
    pub entry_date: NaiveDate,
    pub entry_type: &'static str,
    pub exit: Option<(NaiveDate, &'static str)>,
    pub sections: Vec<SectionEnrollment>,
    pub uuids: [Uuid; 4],
}

impl StudentPlan {
    fn new(seed: u64, usi: i32, school: &School) -> StudentPlan {
        let mut rng = stream(seed, "student", usi as u64);
        let grades = school.level.grades();
        let grade = rng.gen_range(grades);
        let first = random_first_name(&mut rng);
        let last = random_last_name(&mut rng);
        let middle = rng.gen_bool(0.4).then(|| random_first_name(&mut rng).0);
        let birth_date =
            date(2019 - i32::from(grade), 9, 1) + chrono::Duration::days(rng.gen_range(0..365));
        let sex = if rng.gen_bool(0.5) { "Female" } else { "Male" };
        let race_codes = [
            "Black - African American",
            "White",
            "Asian",
            "American Indian - Alaska Native",
            "Native Hawaiian - Pacific Islander",
        ];
        let mut races = vec![race_codes[weighted(&mut rng, &[50, 30, 12, 4, 4])]];
        if rng.gen_bool(0.15) {
            let other = *race_codes.choose(&mut rng).expect("races");
            if other != races[0] {
                races.push(other);
            }
        }
        let uid = student_unique_id(usi);
        let mut emails = vec![(
            "Organization",
            format!("{uid}@students.achievement.example.org"),
            true,
        )];
        if rng.gen_bool(0.6) {
            emails.push((
                "Home/Personal",
                format!("{}.{}{}@mail.example.com", first.1, last.1, usi % 1000),
                false,
            ));
        }
        let (entry_date, entry_type) = if rng.gen_bool(0.9) {
            (first_student_day(), "Next year school")
        } else {
            (
                first_student_day() + chrono::Duration::days(rng.gen_range(1..180)),
                "Transfer from a public school",
            )
        };
        let exit = rng.gen_bool(0.04).then(|| {
            let days = (date(2025, 6, 1) - entry_date).num_days();
            (
                entry_date + chrono::Duration::days(rng.gen_range(1..days)),
                if rng.gen_bool(0.5) {
                    "Transferred"
                } else {
                    "Moved out of state"
                },
            )
        });
        let mut sections = Vec::new();
        for sem in semesters() {
            let last_day = exit.map_or(sem.end, |(d, _)| d.min(sem.end));
            if entry_date > sem.end || last_day < sem.begin {
                continue;
            }
            for (k, (prefix, _)) in SUBJECTS.iter().enumerate() {
                let course = course_code(prefix, grade);
                let n = rng.gen_range(0..school.sections_per_course());
                sections.push(SectionEnrollment {
                    section: school.section_identifier(&course, &sem, n),
                    course: school.local_course_code(k, grade),
                    session: sem.name,
                    begin: entry_date.max(sem.begin),
                    end: last_day,
                });
            }
        }
        let uuids = [
            random_uuid(&mut rng),
            random_uuid(&mut rng),
            random_uuid(&mut rng),
            random_uuid(&mut rng),
        ];
        StudentPlan {
            usi,
            school_id: school.id,
            calendar_code: school.calendar_code(),
            grade,
            first,
            middle,
            last,
            birth_date,
            sex,
            races,
            emails,
            entry_date,
            entry_type,
            exit,
            sections,
            uuids,
        }
    }

    pub fn unique_id(&self) -> String {
        student_unique_id(self.usi)
    }

    /// The student's assessment results (from a stream of its own).
    pub fn assessments(&self, seed: u64) -> Vec<AssessmentResult> {
        let mut rng = stream(seed, "student-assessment", self.usi as u64);
        (0..SUBJECTS.len())
            .map(|subject| AssessmentResult::random(&mut rng, self, subject, 1))
            .collect()
    }
}

/// One student assessment with its item results.
pub struct AssessmentResult {
    pub assessment: String,
    pub identifier: String,
    pub administered: NaiveDateTime,
    pub items: Vec<(&'static str, &'static str, u32)>,
    pub uuid: Uuid,
}

impl AssessmentResult {
    /// A random result of interim `interim` of a subject for a student of `grade`.
    pub fn random(
        rng: &mut impl Rng,
        student: &StudentPlan,
        subject: usize,
        interim: u8,
    ) -> AssessmentResult {
        let assessment = assessment_id(subject, student.grade, interim);
        let ability: f64 = rng.gen_range(0.2..0.95);
        let items = (0..ITEMS)
            .map(|k| {
                let correct = rng.gen_bool(ability);
                let answer = ["A", "B", "C", "D"][rng.gen_range(0..4)];
                let response = if correct {
                    correct_response(k)
                } else if answer == correct_response(k) {
                    "E"
                } else {
                    answer
                };
                (item_code(k), response, u32::from(correct))
            })
            .collect();
        let day = rng.gen_range(0..10);
        let administered = (date(2024, 10, 7)
            + chrono::Duration::days(i64::from(interim - 1) * 70 + day))
        .and_hms_opt(rng.gen_range(8..15), rng.gen_range(0..60), 0)
        .expect("valid time");
        AssessmentResult {
            identifier: format!("{assessment}-{}", student.unique_id()),
            assessment,
            administered,
            items,
            uuid: random_uuid(rng),
        }
    }

    pub fn raw_score(&self) -> u32 {
        self.items.iter().map(|i| i.2).sum()
    }
}

pub fn item_code(k: usize) -> &'static str {
    ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6"][k]
}

pub fn correct_response(k: usize) -> &'static str {
    ["B", "D", "A", "C", "A", "B"][k]
}

/// Index drawn with the given weights.
pub fn weighted(rng: &mut impl Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}
