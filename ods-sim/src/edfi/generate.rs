//! Row generators: each table's rows in PostgreSQL COPY text format, streamed in chunks.
//!
//! Every generator writes only the columns it fills (listed in [`columns`]); the others load as
//! NULL. Rows depend only on the plan (seed, student count) and per-table random streams, never
//! on the order in which tables are generated.

use super::descriptors;
use super::plan::{
    self, Plan, ILLUMINATE_NS, INTERIMS, ITEMS, LEA_ID, SCHOOL_YEAR, STATE_NS, SUBJECTS,
};
use chrono::{NaiveDate, NaiveDateTime};
use rand::Rng;
use std::collections::HashMap;
use std::fmt::Write as _;
use uuid::Uuid;

/// Rows are handed over in chunks of about this many bytes.
const CHUNK: usize = 256 * 1024;

/// Descriptor ids by (type, code value).
pub struct Ids(HashMap<(&'static str, &'static str), i32>);

impl Ids {
    pub fn new() -> Ids {
        Ids(descriptors::all().map(|(id, t, c)| ((t, c), id)).collect())
    }

    pub fn get(&self, ty: &'static str, code: &'static str) -> i32 {
        *self
            .0
            .get(&(ty, code))
            .unwrap_or_else(|| panic!("descriptor {ty}#{code} is not in the catalog"))
    }
}

/// A value in COPY text format.
pub trait Field {
    fn put(&self, out: &mut Vec<u8>);
}

impl Field for &str {
    fn put(&self, out: &mut Vec<u8>) {
        for b in self.bytes() {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
    }
}

impl Field for String {
    fn put(&self, out: &mut Vec<u8>) {
        self.as_str().put(out)
    }
}

impl Field for &String {
    fn put(&self, out: &mut Vec<u8>) {
        self.as_str().put(out)
    }
}

macro_rules! display_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn put(&self, out: &mut Vec<u8>) {
                let mut s = String::new();
                write!(s, "{}", self).expect("write to string");
                out.extend_from_slice(s.as_bytes());
            }
        }
    )*};
}
display_field!(i16, i32, i64, u32, u64, usize, NaiveDate, Uuid);

impl Field for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(if *self { b't' } else { b'f' });
    }
}

impl Field for NaiveDateTime {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.format("%Y-%m-%d %H:%M:%S%.6f").to_string().as_bytes());
    }
}

impl<T: Field> Field for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Some(v) => v.put(out),
            None => out.extend_from_slice(b"\\N"),
        }
    }
}

/// Collects rows and hands full chunks to `flush`.
pub struct RowWriter<'a> {
    buf: Vec<u8>,
    fields: usize,
    width: usize,
    rows: u64,
    flush: &'a mut dyn FnMut(Vec<u8>) -> anyhow::Result<()>,
}

impl<'a> RowWriter<'a> {
    pub fn new(width: usize, flush: &'a mut dyn FnMut(Vec<u8>) -> anyhow::Result<()>) -> Self {
        RowWriter {
            buf: Vec::with_capacity(CHUNK + 4096),
            fields: 0,
            width,
            rows: 0,
            flush,
        }
    }

    pub fn field(&mut self, v: impl Field) {
        if self.fields > 0 {
            self.buf.push(b'\t');
        }
        v.put(&mut self.buf);
        self.fields += 1;
    }

    pub fn end(&mut self) -> anyhow::Result<()> {
        assert_eq!(
            self.fields, self.width,
            "row width differs from the column list"
        );
        self.buf.push(b'\n');
        self.fields = 0;
        self.rows += 1;
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
            (self.flush)(chunk)?;
        }
        Ok(())
    }

    /// Flushes the rest and returns the number of rows written.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            (self.flush)(chunk)?;
        }
        Ok(self.rows)
    }
}

macro_rules! row {
    ($w:expr; $($v:expr),+ $(,)?) => {{
        $( $w.field($v); )+
        $w.end()?;
    }};
}

/// The columns a table's generator fills, in the order it writes them.
pub fn columns(table: &str) -> &'static [&'static str] {
    const STD: [&str; 3] = ["CreateDate", "LastModifiedDate", "Id"];
    macro_rules! cols {
        ($($c:literal),* ; std) => {{
            const C: &[&str] = &[$($c,)* STD[0], STD[1], STD[2]];
            C
        }};
        ($($c:literal),*) => {{
            const C: &[&str] = &[$($c),*];
            C
        }};
    }
    match table {
        "Descriptor" => {
            cols!("DescriptorId", "Namespace", "CodeValue", "ShortDescription", "Description", "EffectiveBeginDate"; std)
        }
        "GradeLevelDescriptor" => cols!("GradeLevelDescriptorId"),
        "CalendarEventDescriptor" => cols!("CalendarEventDescriptorId"),
        "AssessmentItemCategoryDescriptor" => cols!("AssessmentItemCategoryDescriptorId"),
        "AssessmentItemResultDescriptor" => cols!("AssessmentItemResultDescriptorId"),
        "AssessmentReportingMethodDescriptor" => cols!("AssessmentReportingMethodDescriptorId"),
        "SchoolYearType" => cols!("SchoolYear", "SchoolYearDescription", "CurrentSchoolYear"; std),
        "EducationOrganization" => {
            cols!("EducationOrganizationId", "NameOfInstitution", "ShortNameOfInstitution", "WebSite", "OperationalStatusDescriptorId", "Discriminator"; std)
        }
        "EducationOrganizationAddress" => cols!(
            "AddressTypeDescriptorId",
            "City",
            "EducationOrganizationId",
            "PostalCode",
            "StateAbbreviationDescriptorId",
            "StreetNumberName",
            "NameOfCounty",
            "LocaleDescriptorId",
            "CreateDate"
        ),
        "School" => cols!(
            "SchoolId",
            "SchoolTypeDescriptorId",
            "CharterStatusDescriptorId",
            "AdministrativeFundingControlDescriptorId",
            "LocalEducationAgencyId"
        ),
        "SchoolGradeLevel" => cols!("GradeLevelDescriptorId", "SchoolId", "CreateDate"),
        "Calendar" => {
            cols!("CalendarCode", "SchoolId", "SchoolYear", "CalendarTypeDescriptorId"; std)
        }
        "CalendarDate" => cols!("CalendarCode", "Date", "SchoolId", "SchoolYear"; std),
        "CalendarDateCalendarEvent" => cols!(
            "CalendarCode",
            "CalendarEventDescriptorId",
            "Date",
            "SchoolId",
            "SchoolYear",
            "CreateDate"
        ),
        "Session" => {
            cols!("SchoolId", "SchoolYear", "SessionName", "BeginDate", "EndDate", "TermDescriptorId", "TotalInstructionalDays"; std)
        }
        "Course" => {
            cols!("CourseCode", "EducationOrganizationId", "CourseTitle", "NumberOfParts", "AcademicSubjectDescriptorId", "CourseDescription", "HighSchoolCourseRequirement"; std)
        }
        "CourseIdentificationCode" => cols!(
            "CourseCode",
            "CourseIdentificationSystemDescriptorId",
            "EducationOrganizationId",
            "IdentificationCode",
            "CreateDate"
        ),
        "Section" => {
            cols!("LocalCourseCode", "SchoolId", "SchoolYear", "SectionIdentifier", "SessionName", "SequenceOfCourse", "EducationalEnvironmentDescriptorId", "MediumOfInstructionDescriptorId", "LocationSchoolId", "LocationClassroomIdentificationCode", "SectionName"; std)
        }
        "Staff" => {
            cols!("StaffUSI", "FirstName", "LastSurname", "SexDescriptorId", "BirthDate", "HispanicLatinoEthnicity", "HighestCompletedLevelOfEducationDescriptorId", "YearsOfPriorTeachingExperience", "LoginId", "HighlyQualifiedTeacher", "StaffUniqueId"; std)
        }
        "StaffSectionAssociation" => {
            cols!("LocalCourseCode", "SchoolId", "SchoolYear", "SectionIdentifier", "SessionName", "StaffUSI", "ClassroomPositionDescriptorId", "BeginDate", "EndDate", "HighlyQualifiedTeacher", "PercentageContribution"; std)
        }
        "Student" => {
            cols!("StudentUSI", "FirstName", "MiddleName", "LastSurname", "BirthDate", "BirthSexDescriptorId", "StudentUniqueId"; std)
        }
        "StudentEducationOrganizationAssociationElectronicMail" => cols!(
            "EducationOrganizationId",
            "ElectronicMailAddress",
            "ElectronicMailTypeDescriptorId",
            "StudentUSI",
            "PrimaryEmailAddressIndicator",
            "CreateDate"
        ),
        "StudentEducationOrganizationAssociationRace" => cols!(
            "EducationOrganizationId",
            "RaceDescriptorId",
            "StudentUSI",
            "CreateDate"
        ),
        "StudentSchoolAssociation" => {
            cols!("EntryDate", "SchoolId", "StudentUSI", "PrimarySchool", "EntryGradeLevelDescriptorId", "EntryTypeDescriptorId", "ClassOfSchoolYear", "ExitWithdrawDate", "ExitWithdrawTypeDescriptorId", "ResidencyStatusDescriptorId", "CalendarCode", "SchoolYear", "FullTimeEquivalency"; std)
        }
        "StudentSectionAssociation" => {
            cols!("BeginDate", "LocalCourseCode", "SchoolId", "SchoolYear", "SectionIdentifier", "SessionName", "StudentUSI", "EndDate", "HomeroomIndicator"; std)
        }
        "Assessment" => {
            cols!("AssessmentIdentifier", "Namespace", "AssessmentTitle", "AssessmentCategoryDescriptorId", "AssessmentForm", "AssessmentVersion", "RevisionDate", "MaxRawScore", "AssessmentFamily", "EducationOrganizationId", "AdaptiveAssessment"; std)
        }
        "AssessmentAcademicSubject" => cols!(
            "AcademicSubjectDescriptorId",
            "AssessmentIdentifier",
            "Namespace",
            "CreateDate"
        ),
        "AssessmentAssessedGradeLevel" => cols!(
            "AssessmentIdentifier",
            "GradeLevelDescriptorId",
            "Namespace",
            "CreateDate"
        ),
        "AssessmentItem" => {
            cols!("AssessmentIdentifier", "IdentificationCode", "Namespace", "AssessmentItemCategoryDescriptorId", "MaxRawScore", "ItemText", "CorrectResponse", "AssessmentItemURI"; std)
        }
        "AssessmentItemLearningStandard" => cols!(
            "AssessmentIdentifier",
            "IdentificationCode",
            "LearningStandardId",
            "Namespace",
            "CreateDate"
        ),
        "LearningStandard" => {
            cols!("LearningStandardId", "Description", "LearningStandardItemCode", "CourseTitle", "Namespace", "LearningStandardCategoryDescriptorId"; std)
        }
        "AssessmentScore" => cols!(
            "AssessmentIdentifier",
            "AssessmentReportingMethodDescriptorId",
            "Namespace",
            "MinimumScore",
            "MaximumScore",
            "ResultDatatypeTypeDescriptorId",
            "CreateDate"
        ),
        "AssessmentPerformanceLevel" => cols!(
            "AssessmentIdentifier",
            "AssessmentReportingMethodDescriptorId",
            "Namespace",
            "PerformanceLevelDescriptorId",
            "MinimumScore",
            "MaximumScore",
            "ResultDatatypeTypeDescriptorId",
            "CreateDate"
        ),
        "StudentAssessment" => {
            cols!("AssessmentIdentifier", "Namespace", "StudentAssessmentIdentifier", "StudentUSI", "AdministrationDate", "AdministrationLanguageDescriptorId", "WhenAssessedGradeLevelDescriptorId", "SchoolYear"; std)
        }
        "StudentAssessmentItem" => cols!(
            "AssessmentIdentifier",
            "IdentificationCode",
            "Namespace",
            "StudentAssessmentIdentifier",
            "StudentUSI",
            "AssessmentResponse",
            "AssessmentItemResultDescriptorId",
            "RawScoreResult",
            "CreateDate"
        ),
        "StudentAssessmentPerformanceLevel" => cols!(
            "AssessmentIdentifier",
            "AssessmentReportingMethodDescriptorId",
            "Namespace",
            "PerformanceLevelDescriptorId",
            "StudentAssessmentIdentifier",
            "StudentUSI",
            "PerformanceLevelMet",
            "CreateDate"
        ),
        "StudentAssessmentScoreResult" => cols!(
            "AssessmentIdentifier",
            "AssessmentReportingMethodDescriptorId",
            "Namespace",
            "StudentAssessmentIdentifier",
            "StudentUSI",
            "Result",
            "ResultDatatypeTypeDescriptorId",
            "CreateDate"
        ),
        other => panic!("no generator for table {other}"),
    }
}

/// The tables whose row count grows with the number of students (the others are small).
pub fn per_student(table: &str) -> bool {
    matches!(
        table,
        "Student"
            | "StudentEducationOrganizationAssociationElectronicMail"
            | "StudentEducationOrganizationAssociationRace"
            | "StudentSchoolAssociation"
            | "StudentSectionAssociation"
            | "StudentAssessment"
            | "StudentAssessmentItem"
            | "StudentAssessmentPerformanceLevel"
            | "StudentAssessmentScoreResult"
    )
}

/// An Illuminate or state assessment of the catalog.
struct AssessmentDef {
    id: String,
    namespace: &'static str,
    title: String,
    subject: usize,
    grade: u8,
    illuminate: bool,
}

fn assessments() -> Vec<AssessmentDef> {
    let mut out = Vec::new();
    for (subject, (_, subject_name)) in SUBJECTS.iter().enumerate() {
        for grade in 0..=12u8 {
            for interim in 1..=INTERIMS {
                out.push(AssessmentDef {
                    id: plan::assessment_id(subject, grade, interim),
                    namespace: ILLUMINATE_NS,
                    title: format!(
                        "{}-{} {} {subject_name} Interim {interim}",
                        SCHOOL_YEAR - 1,
                        SCHOOL_YEAR % 100,
                        plan::grade_name(grade)
                    ),
                    subject,
                    grade,
                    illuminate: true,
                });
            }
        }
        out.push(AssessmentDef {
            id: format!("STATE-{SCHOOL_YEAR}-{}-G08", SUBJECTS[subject].0),
            namespace: STATE_NS,
            title: format!("State Summative Assessment {subject_name} Grade 8"),
            subject,
            grade: 8,
            illuminate: false,
        });
    }
    out
}

/// Writes all rows of `table` for `plan`.
pub fn generate(table: &str, plan: &Plan, w: &mut RowWriter) -> anyhow::Result<()> {
    let ids = Ids::new();
    let t0 = plan::load_time();
    let mut uuid_rng = plan::stream(plan.seed, &format!("uuid:{table}"), 0);
    let mut uuid = move || plan::random_uuid(&mut uuid_rng);
    let students = 1..=plan.students as i32;
    match table {
        "Descriptor" => {
            for (id, ty, code) in descriptors::all() {
                row!(w; id, descriptors::namespace(ty), code, code, code, Some(plan::date(2010, 7, 1)), t0, t0, uuid());
            }
        }
        "GradeLevelDescriptor"
        | "CalendarEventDescriptor"
        | "AssessmentItemCategoryDescriptor"
        | "AssessmentItemResultDescriptor"
        | "AssessmentReportingMethodDescriptor" => {
            for id in descriptors::ids(table) {
                row!(w; id);
            }
        }
        "SchoolYearType" => {
            for y in 2020..=2026i16 {
                row!(w; y, format!("{}-{}", y - 1, y), y == SCHOOL_YEAR, t0, t0, uuid());
            }
        }
        "EducationOrganization" => {
            let active = ids.get("OperationalStatusDescriptor", "Active");
            row!(w; LEA_ID, "Achievement Network Public Schools", Some("ANPS"), Some("https://achievement.example.org"), Some(active), Some("edfi.LocalEducationAgency"), t0, t0, uuid());
            for s in &plan.schools {
                row!(w; s.id, &s.name, Some(&s.short_name), None::<&str>, Some(active), Some("edfi.School"), t0, t0, uuid());
            }
        }
        "EducationOrganizationAddress" => {
            let physical = ids.get("AddressTypeDescriptor", "Physical");
            row!(w; physical, "New Haven", LEA_ID, "06510", ids.get("StateAbbreviationDescriptor", "CT"), "370 James Street", Some("New Haven"), Some(ids.get("LocaleDescriptor", "City")), t0);
            for s in &plan.schools {
                let (city, state, zip) = s.city;
                row!(w; physical, city, s.id, zip, ids.get("StateAbbreviationDescriptor", state), &s.street, None::<&str>, Some(ids.get("LocaleDescriptor", "City")), t0);
            }
        }
        "School" => {
            for s in &plan.schools {
                row!(w; s.id, Some(ids.get("SchoolTypeDescriptor", "Regular")), Some(ids.get("CharterStatusDescriptor", "School Charter")), Some(ids.get("AdministrativeFundingControlDescriptor", "Public School")), Some(LEA_ID));
            }
        }
        "SchoolGradeLevel" => {
            for s in &plan.schools {
                for g in s.level.grades() {
                    row!(w; descriptors::grade(g), s.id, t0);
                }
            }
        }
        "Calendar" => {
            for year in plan::school_years() {
                for s in &plan.schools {
                    row!(w; s.calendar_code_of(year), s.id, year, ids.get("CalendarTypeDescriptor", "School"), t0, t0, uuid());
                }
            }
        }
        "CalendarDate" => {
            for year in plan::school_years() {
                let dates = plan::calendar_dates_of(year);
                for s in &plan.schools {
                    for (day, _) in &dates {
                        row!(w; s.calendar_code_of(year), *day, s.id, year, t0, t0, uuid());
                    }
                }
            }
        }
        "CalendarDateCalendarEvent" => {
            for year in plan::school_years() {
                let dates = plan::calendar_dates_of(year);
                for s in &plan.schools {
                    for (day, event) in &dates {
                        row!(w; s.calendar_code_of(year), ids.get("CalendarEventDescriptor", event), *day, s.id, year, t0);
                    }
                }
            }
        }
        "Session" => {
            for year in plan::school_years() {
                for s in &plan.schools {
                    for sem in plan::semesters_of(year) {
                        let days = plan::instructional_days(sem.begin, sem.end) as i32;
                        row!(w; s.id, year, sem.name, sem.begin, sem.end, ids.get("TermDescriptor", sem.term), days, t0, t0, uuid());
                    }
                }
            }
        }
        "Course" => {
            for s in &plan.schools {
                for g in s.level.grades() {
                    for (prefix, subject) in SUBJECTS {
                        let title = format!("{} {subject}", plan::grade_name(g));
                        row!(w; plan::course_code(prefix, g), s.id, &title, 2, Some(ids.get("AcademicSubjectDescriptor", subject)), Some(format!("{title}, full year, two semesters.")), (g >= 9).then_some(true), t0, t0, uuid());
                    }
                }
            }
        }
        "CourseIdentificationCode" => {
            for s in &plan.schools {
                for g in s.level.grades() {
                    for (k, (prefix, _)) in SUBJECTS.iter().enumerate() {
                        let code = plan::course_code(prefix, g);
                        if let Some(lea) = s.lea_course_code(k, g) {
                            row!(w; &code, ids.get("CourseIdentificationSystemDescriptor", "LEA course code"), s.id, lea, t0);
                        }
                        row!(w; &code, ids.get("CourseIdentificationSystemDescriptor", "State course code"), s.id, format!("{:02}{:03}", k + 1, g), t0);
                    }
                }
            }
        }
        "Section" => {
            for year in plan::school_years() {
                for s in &plan.schools {
                    for g in s.level.grades() {
                        for (k, (prefix, subject)) in SUBJECTS.iter().enumerate() {
                            let course = plan::course_code(prefix, g);
                            let local = s.local_course_code(k, g);
                            for sem in plan::semesters_of(year) {
                                for n in 0..s.sections_per_course() {
                                    let room = format!("Room {}{:02}", 1 + g % 4, n + 1);
                                    row!(w; &local, s.id, year, s.section_identifier(&course, &sem, n), sem.name, Some(1), Some(ids.get("EducationalEnvironmentDescriptor", "Classroom")), Some(ids.get("MediumOfInstructionDescriptor", "Face-to-face instruction")), Some(s.id), Some(room), Some(format!("{} {subject} {}{:02}", plan::grade_name(g), sem.letter, n + 1)), t0, t0, uuid());
                                }
                            }
                        }
                    }
                }
            }
        }
        "Staff" => {
            for m in plan.staff() {
                let mut rng = plan::stream(plan.seed, "staff", m.usi as u64);
                let first = plan::random_first_name(&mut rng);
                let last = plan::random_last_name(&mut rng);
                let sex = if rng.gen_bool(0.7) { "Female" } else { "Male" };
                let birth =
                    plan::date(1965, 1, 1) + chrono::Duration::days(rng.gen_range(0..12_000));
                let degree = if rng.gen_bool(0.6) {
                    "Master's"
                } else {
                    "Bachelor's"
                };
                let years = format!("{}.00", rng.gen_range(0..25));
                row!(w; m.usi, first.0, last.0, Some(ids.get("SexDescriptor", sex)), Some(birth), Some(rng.gen_bool(0.2)), Some(ids.get("LevelOfEducationDescriptor", degree)), Some(years), Some(format!("{}.{}{}", first.1, last.1, m.usi)), Some(m.teaches.is_some()), format!("T{:06}", m.usi), t0, t0, uuid());
            }
        }
        "StaffSectionAssociation" => {
            let teacher = ids.get("ClassroomPositionDescriptor", "Teacher of Record");
            for year in plan::school_years() {
                for s in &plan.schools {
                    for g in s.level.grades() {
                        for (k, (prefix, _)) in SUBJECTS.iter().enumerate() {
                            let course = plan::course_code(prefix, g);
                            let local = s.local_course_code(k, g);
                            for sem in plan::semesters_of(year) {
                                for n in 0..s.sections_per_course() {
                                    row!(w; &local, s.id, year, s.section_identifier(&course, &sem, n), sem.name, s.teacher(g, k), teacher, Some(sem.begin), Some(sem.end), Some(true), Some("1.0000"), t0, t0, uuid());
                                }
                            }
                        }
                    }
                }
            }
        }
        "Student" => {
            for usi in students {
                let p = plan.student(usi);
                row!(w; usi, p.first.0, p.middle, p.last.0, p.birth_date, Some(ids.get("SexDescriptor", p.sex)), p.unique_id(), t0, t0, uuid());
            }
        }
        "StudentEducationOrganizationAssociationElectronicMail" => {
            for usi in students {
                let p = plan.student(usi);
                for (ty, address, primary) in &p.emails {
                    row!(w; LEA_ID, address, ids.get("ElectronicMailTypeDescriptor", ty), usi, Some(*primary), t0);
                }
            }
        }
        "StudentEducationOrganizationAssociationRace" => {
            for usi in students {
                let p = plan.student(usi);
                for race in &p.races {
                    row!(w; LEA_ID, ids.get("RaceDescriptor", race), usi, t0);
                }
            }
        }
        "StudentSchoolAssociation" => {
            let residency = ids.get(
                "ResidencyStatusDescriptor",
                "Resident of admin unit and school area",
            );
            for usi in students {
                let p = plan.student(usi);
                let class_of = SCHOOL_YEAR + 12 - i16::from(p.grade);
                for e in plan.prior_enrollments(&p) {
                    row!(w; e.entry, p.school_id, usi, Some(true), descriptors::grade(e.grade), Some(ids.get("EntryTypeDescriptor", p.entry_type)), Some(class_of), None::<NaiveDate>, None::<i32>, Some(residency), Some(&e.calendar_code), Some(e.year), Some("1.00"), t0, t0, uuid());
                }
                row!(w; p.entry_date, p.school_id, usi, Some(true), descriptors::grade(p.grade), Some(ids.get("EntryTypeDescriptor", p.entry_type)), Some(class_of), p.exit.map(|e| e.0), p.exit.map(|e| ids.get("ExitWithdrawTypeDescriptor", e.1)), Some(residency), Some(&p.calendar_code), Some(SCHOOL_YEAR), Some("1.00"), t0, t0, uuid());
            }
        }
        "StudentSectionAssociation" => {
            for usi in students {
                let p = plan.student(usi);
                for prior in plan.prior_enrollments(&p) {
                    for e in &prior.sections {
                        row!(w; e.begin, &e.course, p.school_id, prior.year, &e.section, e.session, usi, Some(e.end), Some(false), t0, t0, uuid());
                    }
                }
                for e in &p.sections {
                    row!(w; e.begin, &e.course, p.school_id, SCHOOL_YEAR, &e.section, e.session, usi, Some(e.end), Some(false), t0, t0, uuid());
                }
            }
        }
        "Assessment" => {
            let interim = ids.get("AssessmentCategoryDescriptor", "Benchmark test");
            let state = ids.get("AssessmentCategoryDescriptor", "State summative assessment");
            for a in assessments() {
                let (category, family, max) = if a.illuminate {
                    (
                        interim,
                        format!("Illuminate Interim {}", SUBJECTS[a.subject].1),
                        ITEMS,
                    )
                } else {
                    (state, "State Summative".to_string(), 60)
                };
                row!(w; &a.id, a.namespace, &a.title, Some(category), Some("Form A"), Some(i32::from(SCHOOL_YEAR)), Some(plan::date(2024, 7, 15)), Some(format!("{max}.00000")), Some(family), Some(LEA_ID), Some(false), t0, t0, uuid());
            }
        }
        "AssessmentAcademicSubject" => {
            for a in assessments() {
                row!(w; ids.get("AcademicSubjectDescriptor", SUBJECTS[a.subject].1), &a.id, a.namespace, t0);
            }
        }
        "AssessmentAssessedGradeLevel" => {
            for a in assessments() {
                row!(w; &a.id, descriptors::grade(a.grade), a.namespace, t0);
            }
        }
        "AssessmentItem" => {
            let mc = ids.get("AssessmentItemCategoryDescriptor", "Multiple choice");
            for a in assessments().iter().filter(|a| a.illuminate) {
                for k in 0..ITEMS {
                    let code = plan::item_code(k);
                    row!(w; &a.id, code, a.namespace, Some(mc), Some("1.00000"), Some(format!("{} — question {}", a.title, k + 1)), Some(plan::correct_response(k)), Some(format!("https://illuminateed.example.com/items/{}/{code}", a.id)), t0, t0, uuid());
                }
            }
        }
        "AssessmentItemLearningStandard" => {
            for a in assessments().iter().filter(|a| a.illuminate) {
                for k in 0..ITEMS {
                    row!(w; &a.id, plan::item_code(k), plan::learning_standard(a.subject, a.grade, k).0, a.namespace, t0);
                }
            }
        }
        "LearningStandard" => {
            let category = ids.get("LearningStandardCategoryDescriptor", "Standard");
            for (subject, (_, subject_name)) in SUBJECTS.iter().enumerate() {
                for g in 0..=12u8 {
                    for k in 0..ITEMS {
                        let (id, ns) = plan::learning_standard(subject, g, k);
                        let code = id.rsplit_once('.').map(|(_, c)| c.to_string());
                        row!(w; &id, format!("{} {subject_name}: standard {}", plan::grade_name(g), k + 1), code, Some(format!("{} {subject_name}", plan::grade_name(g))), ns, Some(category), t0, t0, uuid());
                    }
                }
            }
        }
        "AssessmentScore" => {
            let raw = ids.get("AssessmentReportingMethodDescriptor", "Raw score");
            let scale = ids.get("AssessmentReportingMethodDescriptor", "Scale score");
            let int = ids.get("ResultDatatypeTypeDescriptor", "Integer");
            for a in assessments() {
                let max = if a.illuminate { ITEMS as u32 } else { 60 };
                row!(w; &a.id, raw, a.namespace, Some("0"), Some(max.to_string()), Some(int), t0);
                row!(w; &a.id, scale, a.namespace, Some(plan::scale_score(0).to_string()), Some(plan::scale_score(max).to_string()), Some(int), t0);
            }
        }
        "AssessmentPerformanceLevel" => {
            let raw = ids.get("AssessmentReportingMethodDescriptor", "Raw score");
            let int = ids.get("ResultDatatypeTypeDescriptor", "Integer");
            for a in assessments().iter().filter(|a| a.illuminate) {
                for (level, lo, hi) in plan::performance_levels() {
                    row!(w; &a.id, raw, a.namespace, ids.get("PerformanceLevelDescriptor", level), Some(lo.to_string()), Some(hi.to_string()), Some(int), t0);
                }
            }
        }
        "StudentAssessment" => {
            let eng = ids.get("LanguageDescriptor", "eng");
            for usi in students {
                let p = plan.student(usi);
                for r in p.assessments(plan.seed) {
                    row!(w; &r.assessment, ILLUMINATE_NS, &r.identifier, usi, r.administered, Some(eng), Some(descriptors::grade(p.grade)), Some(SCHOOL_YEAR), t0, t0, r.uuid);
                }
            }
        }
        "StudentAssessmentItem" => {
            for usi in students {
                let p = plan.student(usi);
                for r in p.assessments(plan.seed) {
                    for (code, response, score) in &r.items {
                        let result = if *score > 0 { "Correct" } else { "Incorrect" };
                        row!(w; &r.assessment, *code, ILLUMINATE_NS, &r.identifier, usi, Some(*response), ids.get("AssessmentItemResultDescriptor", result), Some(format!("{score}.00000")), t0);
                    }
                }
            }
        }
        "StudentAssessmentPerformanceLevel" => {
            let raw = ids.get("AssessmentReportingMethodDescriptor", "Raw score");
            for usi in students {
                let p = plan.student(usi);
                for r in p.assessments(plan.seed) {
                    let level = plan::performance_level(r.raw_score());
                    let met = matches!(level, "Advanced" | "Proficient");
                    row!(w; &r.assessment, raw, ILLUMINATE_NS, ids.get("PerformanceLevelDescriptor", level), &r.identifier, usi, met, t0);
                }
            }
        }
        "StudentAssessmentScoreResult" => {
            let raw = ids.get("AssessmentReportingMethodDescriptor", "Raw score");
            let scale = ids.get("AssessmentReportingMethodDescriptor", "Scale score");
            let int = ids.get("ResultDatatypeTypeDescriptor", "Integer");
            for usi in students {
                let p = plan.student(usi);
                for r in p.assessments(plan.seed) {
                    row!(w; &r.assessment, raw, ILLUMINATE_NS, &r.identifier, usi, r.raw_score().to_string(), int, t0);
                    row!(w; &r.assessment, scale, ILLUMINATE_NS, &r.identifier, usi, plan::scale_score(r.raw_score()).to_string(), int, t0);
                }
            }
        }
        other => panic!("no generator for table {other}"),
    }
    Ok(())
}
