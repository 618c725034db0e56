//! The descriptor catalog of the sample data: every `edfi.Descriptor` row, in `DescriptorId` order.
//!
//! Ids are assigned 1, 2, … in catalog order, so they are the same in every generated database
//! and the workload can compute them without asking the database.

/// Descriptor types with their code values (Ed-Fi default namespace `uri://ed-fi.org/<Type>`).
const CATALOG: &[(&str, &[&str])] = &[
    (
        "GradeLevelDescriptor",
        &[
            "Kindergarten",
            "First grade",
            "Second grade",
            "Third grade",
            "Fourth grade",
            "Fifth grade",
            "Sixth grade",
            "Seventh grade",
            "Eighth grade",
            "Ninth grade",
            "Tenth grade",
            "Eleventh grade",
            "Twelfth grade",
            "Preschool/Prekindergarten",
            "Ungraded",
        ],
    ),
    (
        "CalendarEventDescriptor",
        &[
            "Instructional day",
            "Teacher only day",
            "Holiday",
            "Make-up day",
            "Weather day",
            "Student late arrival/early dismissal",
            "Emergency day",
            "Non-instructional day",
            "Other",
        ],
    ),
    (
        "AssessmentItemCategoryDescriptor",
        &[
            "Multiple choice",
            "Short answer",
            "Extended response",
            "True-false",
            "Matching question",
            "Essay",
            "Analytic",
            "Prose",
        ],
    ),
    (
        "AssessmentItemResultDescriptor",
        &["Correct", "Incorrect", "Met standard", "Partially correct"],
    ),
    (
        "AssessmentReportingMethodDescriptor",
        &[
            "Raw score",
            "Scale score",
            "Percentile",
            "Proficiency level",
            "Composite Score",
        ],
    ),
    (
        "CalendarTypeDescriptor",
        &["Student Specific", "IEP", "School"],
    ),
    (
        "TermDescriptor",
        &["Fall Semester", "Spring Semester", "Year Round"],
    ),
    (
        "AcademicSubjectDescriptor",
        &[
            "English Language Arts",
            "Mathematics",
            "Science",
            "Social Studies",
        ],
    ),
    (
        "CourseIdentificationSystemDescriptor",
        &["LEA course code", "State course code", "School course code"],
    ),
    ("AddressTypeDescriptor", &["Physical", "Mailing"]),
    ("StateAbbreviationDescriptor", &["CT", "NY", "RI"]),
    ("LocaleDescriptor", &["City", "Suburb"]),
    ("OperationalStatusDescriptor", &["Active", "Closed"]),
    (
        "EducationOrganizationCategoryDescriptor",
        &["School", "Local Education Agency"],
    ),
    ("SchoolTypeDescriptor", &["Regular", "Alternative"]),
    (
        "CharterStatusDescriptor",
        &["School Charter", "Not a Charter School"],
    ),
    ("AdministrativeFundingControlDescriptor", &["Public School"]),
    ("SexDescriptor", &["Female", "Male", "Not Selected"]),
    (
        "RaceDescriptor",
        &[
            "American Indian - Alaska Native",
            "Asian",
            "Black - African American",
            "Native Hawaiian - Pacific Islander",
            "White",
            "Choose Not to Respond",
        ],
    ),
    (
        "ElectronicMailTypeDescriptor",
        &["Home/Personal", "Organization", "Other"],
    ),
    (
        "EntryTypeDescriptor",
        &[
            "Next year school",
            "Transfer from a public school",
            "Original entry into a United States school",
        ],
    ),
    (
        "ExitWithdrawTypeDescriptor",
        &[
            "Transferred",
            "Moved out of state",
            "Graduated",
            "Withdrawn",
        ],
    ),
    (
        "ResidencyStatusDescriptor",
        &["Resident of admin unit and school area"],
    ),
    (
        "ClassroomPositionDescriptor",
        &["Teacher of Record", "Assistant Teacher", "Support Teacher"],
    ),
    ("EducationalEnvironmentDescriptor", &["Classroom"]),
    (
        "MediumOfInstructionDescriptor",
        &["Face-to-face instruction"],
    ),
    ("CreditTypeDescriptor", &["Carnegie unit"]),
    (
        "PerformanceLevelDescriptor",
        &["Advanced", "Proficient", "Basic", "Below Basic"],
    ),
    (
        "ResultDatatypeTypeDescriptor",
        &["Integer", "Decimal", "Percentile", "Level"],
    ),
    (
        "AssessmentCategoryDescriptor",
        &["Benchmark test", "State summative assessment"],
    ),
    ("LanguageDescriptor", &["eng", "spa"]),
    ("LearningStandardCategoryDescriptor", &["Standard"]),
    ("LevelOfEducationDescriptor", &["Bachelor's", "Master's"]),
];

/// Number of `edfi.Descriptor` rows.
pub fn count() -> usize {
    CATALOG.iter().map(|(_, codes)| codes.len()).sum()
}

/// All descriptors: `(DescriptorId, type, code value)` in id order.
pub fn all() -> impl Iterator<Item = (i32, &'static str, &'static str)> {
    CATALOG
        .iter()
        .flat_map(|(ty, codes)| codes.iter().map(move |code| (*ty, *code)))
        .enumerate()
        .map(|(i, (ty, code))| (i as i32 + 1, ty, code))
}

/// The Ed-Fi namespace of a descriptor type.
pub fn namespace(ty: &str) -> String {
    format!("uri://ed-fi.org/{ty}")
}

/// The `DescriptorId` of a code value of a type. Panics on a code outside the catalog (a bug).
pub fn id(ty: &str, code: &str) -> i32 {
    all()
        .find(|(_, t, c)| *t == ty && *c == code)
        .map(|(id, _, _)| id)
        .unwrap_or_else(|| panic!("descriptor {ty}#{code} is not in the catalog"))
}

/// The ids of all code values of a type, in catalog order.
pub fn ids(ty: &str) -> Vec<i32> {
    all()
        .filter(|(_, t, _)| *t == ty)
        .map(|(id, _, _)| id)
        .collect()
}

/// Grade level descriptor id of grade `g` (0 = Kindergarten … 12 = Twelfth grade).
pub fn grade(g: u8) -> i32 {
    ids("GradeLevelDescriptor")[g as usize]
}

/// The grade (0 = Kindergarten … 12) of a grade level descriptor id, if it is one of K–12.
pub fn grade_of(descriptor_id: i32) -> Option<u8> {
    ids("GradeLevelDescriptor")
        .iter()
        .take(13)
        .position(|&id| id == descriptor_id)
        .map(|g| g as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_codes_unique_per_type() {
        let all: Vec<_> = all().collect();
        assert_eq!(all.len(), count());
        for (i, (id, ty, code)) in all.iter().enumerate() {
            assert_eq!(*id, i as i32 + 1);
            assert!(
                code.len() <= 50,
                "{ty}#{code} exceeds CodeValue nvarchar(50)"
            );
            assert_eq!(
                all.iter().filter(|(_, t, c)| t == ty && c == code).count(),
                1
            );
        }
        assert_eq!(grade(0), id("GradeLevelDescriptor", "Kindergarten"));
        assert_eq!(grade_of(grade(12)), Some(12));
        assert_eq!(grade_of(id("SexDescriptor", "Male")), None);
    }
}
