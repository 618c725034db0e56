//! Consistency checks over a database holding the Ed-Fi tables (the simulator's own, or a
//! replica with the same table and column names): referential integrity along the Ed-Fi
//! references and the workload invariant.

use super::tables;
use tokio_postgres::Client;

/// References between the tables: (child, parent, [(child column, parent column)]). Descriptor
/// columns (`…DescriptorId`) are checked against `Descriptor` separately. A Section references
/// a CourseOffering in Ed-Fi, which the simulator does not keep: its `LocalCourseCode` is a
/// course's LEA course code or its course code (`plan::School::local_course_code`), checked by
/// [`section_course_sql`].
type Reference = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const REFERENCES: &[Reference] = &[
    ("Calendar", "School", &[("SchoolId", "SchoolId")]),
    (
        "Calendar",
        "SchoolYearType",
        &[("SchoolYear", "SchoolYear")],
    ),
    (
        "CalendarDate",
        "Calendar",
        &[
            ("CalendarCode", "CalendarCode"),
            ("SchoolId", "SchoolId"),
            ("SchoolYear", "SchoolYear"),
        ],
    ),
    (
        "CalendarDateCalendarEvent",
        "CalendarDate",
        &[
            ("CalendarCode", "CalendarCode"),
            ("Date", "Date"),
            ("SchoolId", "SchoolId"),
            ("SchoolYear", "SchoolYear"),
        ],
    ),
    (
        "CalendarDateCalendarEvent",
        "CalendarEventDescriptor",
        &[("CalendarEventDescriptorId", "CalendarEventDescriptorId")],
    ),
    (
        "CalendarEventDescriptor",
        "Descriptor",
        &[("CalendarEventDescriptorId", "DescriptorId")],
    ),
    (
        "GradeLevelDescriptor",
        "Descriptor",
        &[("GradeLevelDescriptorId", "DescriptorId")],
    ),
    (
        "AssessmentItemCategoryDescriptor",
        "Descriptor",
        &[("AssessmentItemCategoryDescriptorId", "DescriptorId")],
    ),
    (
        "AssessmentItemResultDescriptor",
        "Descriptor",
        &[("AssessmentItemResultDescriptorId", "DescriptorId")],
    ),
    (
        "AssessmentReportingMethodDescriptor",
        "Descriptor",
        &[("AssessmentReportingMethodDescriptorId", "DescriptorId")],
    ),
    (
        "Course",
        "EducationOrganization",
        &[("EducationOrganizationId", "EducationOrganizationId")],
    ),
    (
        "CourseIdentificationCode",
        "Course",
        &[
            ("CourseCode", "CourseCode"),
            ("EducationOrganizationId", "EducationOrganizationId"),
        ],
    ),
    (
        "EducationOrganizationAddress",
        "EducationOrganization",
        &[("EducationOrganizationId", "EducationOrganizationId")],
    ),
    (
        "School",
        "EducationOrganization",
        &[("SchoolId", "EducationOrganizationId")],
    ),
    (
        "School",
        "EducationOrganization",
        &[("LocalEducationAgencyId", "EducationOrganizationId")],
    ),
    ("SchoolGradeLevel", "School", &[("SchoolId", "SchoolId")]),
    (
        "SchoolGradeLevel",
        "GradeLevelDescriptor",
        &[("GradeLevelDescriptorId", "GradeLevelDescriptorId")],
    ),
    ("Session", "School", &[("SchoolId", "SchoolId")]),
    ("Session", "SchoolYearType", &[("SchoolYear", "SchoolYear")]),
    (
        "Section",
        "Session",
        &[
            ("SchoolId", "SchoolId"),
            ("SchoolYear", "SchoolYear"),
            ("SessionName", "SessionName"),
        ],
    ),
    ("Section", "School", &[("LocationSchoolId", "SchoolId")]),
    (
        "StaffSectionAssociation",
        "Section",
        &[
            ("LocalCourseCode", "LocalCourseCode"),
            ("SchoolId", "SchoolId"),
            ("SchoolYear", "SchoolYear"),
            ("SectionIdentifier", "SectionIdentifier"),
            ("SessionName", "SessionName"),
        ],
    ),
    (
        "StaffSectionAssociation",
        "Staff",
        &[("StaffUSI", "StaffUSI")],
    ),
    (
        "StudentEducationOrganizationAssociationElectronicMail",
        "Student",
        &[("StudentUSI", "StudentUSI")],
    ),
    (
        "StudentEducationOrganizationAssociationElectronicMail",
        "EducationOrganization",
        &[("EducationOrganizationId", "EducationOrganizationId")],
    ),
    (
        "StudentEducationOrganizationAssociationRace",
        "Student",
        &[("StudentUSI", "StudentUSI")],
    ),
    (
        "StudentEducationOrganizationAssociationRace",
        "EducationOrganization",
        &[("EducationOrganizationId", "EducationOrganizationId")],
    ),
    (
        "StudentSchoolAssociation",
        "Student",
        &[("StudentUSI", "StudentUSI")],
    ),
    (
        "StudentSchoolAssociation",
        "School",
        &[("SchoolId", "SchoolId")],
    ),
    (
        "StudentSchoolAssociation",
        "Calendar",
        &[
            ("CalendarCode", "CalendarCode"),
            ("SchoolId", "SchoolId"),
            ("SchoolYear", "SchoolYear"),
        ],
    ),
    (
        "StudentSchoolAssociation",
        "GradeLevelDescriptor",
        &[("EntryGradeLevelDescriptorId", "GradeLevelDescriptorId")],
    ),
    (
        "StudentSectionAssociation",
        "Section",
        &[
            ("LocalCourseCode", "LocalCourseCode"),
            ("SchoolId", "SchoolId"),
            ("SchoolYear", "SchoolYear"),
            ("SectionIdentifier", "SectionIdentifier"),
            ("SessionName", "SessionName"),
        ],
    ),
    (
        "StudentSectionAssociation",
        "Student",
        &[("StudentUSI", "StudentUSI")],
    ),
    (
        "Assessment",
        "EducationOrganization",
        &[("EducationOrganizationId", "EducationOrganizationId")],
    ),
    (
        "AssessmentAcademicSubject",
        "Assessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
        ],
    ),
    (
        "AssessmentAssessedGradeLevel",
        "Assessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
        ],
    ),
    (
        "AssessmentAssessedGradeLevel",
        "GradeLevelDescriptor",
        &[("GradeLevelDescriptorId", "GradeLevelDescriptorId")],
    ),
    (
        "AssessmentItem",
        "Assessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
        ],
    ),
    (
        "AssessmentItem",
        "AssessmentItemCategoryDescriptor",
        &[(
            "AssessmentItemCategoryDescriptorId",
            "AssessmentItemCategoryDescriptorId",
        )],
    ),
    (
        "AssessmentItemLearningStandard",
        "AssessmentItem",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("IdentificationCode", "IdentificationCode"),
            ("Namespace", "Namespace"),
        ],
    ),
    (
        "AssessmentItemLearningStandard",
        "LearningStandard",
        &[("LearningStandardId", "LearningStandardId")],
    ),
    (
        "AssessmentPerformanceLevel",
        "Assessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
        ],
    ),
    (
        "AssessmentPerformanceLevel",
        "AssessmentReportingMethodDescriptor",
        &[(
            "AssessmentReportingMethodDescriptorId",
            "AssessmentReportingMethodDescriptorId",
        )],
    ),
    (
        "AssessmentScore",
        "Assessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
        ],
    ),
    (
        "AssessmentScore",
        "AssessmentReportingMethodDescriptor",
        &[(
            "AssessmentReportingMethodDescriptorId",
            "AssessmentReportingMethodDescriptorId",
        )],
    ),
    (
        "StudentAssessment",
        "Assessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
        ],
    ),
    (
        "StudentAssessment",
        "Student",
        &[("StudentUSI", "StudentUSI")],
    ),
    (
        "StudentAssessmentItem",
        "StudentAssessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
            ("StudentAssessmentIdentifier", "StudentAssessmentIdentifier"),
            ("StudentUSI", "StudentUSI"),
        ],
    ),
    (
        "StudentAssessmentItem",
        "AssessmentItem",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("IdentificationCode", "IdentificationCode"),
            ("Namespace", "Namespace"),
        ],
    ),
    (
        "StudentAssessmentItem",
        "AssessmentItemResultDescriptor",
        &[(
            "AssessmentItemResultDescriptorId",
            "AssessmentItemResultDescriptorId",
        )],
    ),
    (
        "StudentAssessmentPerformanceLevel",
        "StudentAssessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
            ("StudentAssessmentIdentifier", "StudentAssessmentIdentifier"),
            ("StudentUSI", "StudentUSI"),
        ],
    ),
    (
        "StudentAssessmentPerformanceLevel",
        "AssessmentPerformanceLevel",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            (
                "AssessmentReportingMethodDescriptorId",
                "AssessmentReportingMethodDescriptorId",
            ),
            ("Namespace", "Namespace"),
            (
                "PerformanceLevelDescriptorId",
                "PerformanceLevelDescriptorId",
            ),
        ],
    ),
    (
        "StudentAssessmentScoreResult",
        "StudentAssessment",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            ("Namespace", "Namespace"),
            ("StudentAssessmentIdentifier", "StudentAssessmentIdentifier"),
            ("StudentUSI", "StudentUSI"),
        ],
    ),
    (
        "StudentAssessmentScoreResult",
        "AssessmentScore",
        &[
            ("AssessmentIdentifier", "AssessmentIdentifier"),
            (
                "AssessmentReportingMethodDescriptorId",
                "AssessmentReportingMethodDescriptorId",
            ),
            ("Namespace", "Namespace"),
        ],
    ),
];

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The SQL counting rows of `child` whose reference to `parent` points at no row.
fn dangling_sql(schema: &str, child: &str, parent: &str, cols: &[(&str, &str)]) -> String {
    let not_null: Vec<String> = cols
        .iter()
        .map(|(c, _)| format!("c.{} IS NOT NULL", q(c)))
        .collect();
    let join: Vec<String> = cols
        .iter()
        .map(|(c, p)| format!("p.{} = c.{}", q(p), q(c)))
        .collect();
    format!(
        "SELECT count(*) FROM {s}.{c} c WHERE {nn} AND NOT EXISTS (SELECT 1 FROM {s}.{p} p WHERE {j})",
        s = q(schema),
        c = q(child),
        p = q(parent),
        nn = not_null.join(" AND "),
        j = join.join(" AND ")
    )
}

/// Sections whose `LocalCourseCode` is neither an identification code nor the code of a course
/// at the section's school.
fn section_course_sql(schema: &str) -> String {
    format!(
        "SELECT count(*) FROM {s}.\"Section\" c WHERE NOT EXISTS (SELECT 1 FROM {s}.\"CourseIdentificationCode\" i \
         WHERE i.\"IdentificationCode\" = c.\"LocalCourseCode\" AND i.\"EducationOrganizationId\" = c.\"SchoolId\") \
         AND NOT EXISTS (SELECT 1 FROM {s}.\"Course\" p \
         WHERE p.\"CourseCode\" = c.\"LocalCourseCode\" AND p.\"EducationOrganizationId\" = c.\"SchoolId\")",
        s = q(schema)
    )
}

/// Every reference that points at no row: `(description, dangling rows)`; empty when the data
/// is referentially consistent. Includes every `…DescriptorId` column against `Descriptor`.
pub async fn dangling_references(
    client: &Client,
    schema: &str,
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut checks: Vec<(String, String)> = REFERENCES
        .iter()
        .map(|(c, p, cols)| {
            let what = format!(
                "{c}({}) -> {p}",
                cols.iter().map(|x| x.0).collect::<Vec<_>>().join(", ")
            );
            (what, dangling_sql(schema, c, p, cols))
        })
        .collect();
    checks.push((
        "Section(LocalCourseCode, SchoolId) -> CourseIdentificationCode or Course".into(),
        section_course_sql(schema),
    ));
    for def in tables::tables() {
        let own_key = (def.name.ends_with("Descriptor") && def.name != "Descriptor")
            .then(|| def.primary_key[0].clone());
        for col in &def.columns {
            if col.name.ends_with("DescriptorId")
                && def.name != "Descriptor"
                && Some(&col.name) != own_key.as_ref()
            {
                let cols = [(col.name.as_str(), "DescriptorId")];
                checks.push((
                    format!("{}({}) -> Descriptor", def.name, col.name),
                    dangling_sql(schema, &def.name, "Descriptor", &cols),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for (what, sql) in checks {
        let n: i64 = client.query_one(&sql, &[]).await?.get(0);
        if n > 0 {
            out.push((what, n as u64));
        }
    }
    Ok(out)
}

/// The workload invariant: every StudentSchoolAssociation has at least one
/// StudentSectionAssociation of the same student in a section of the same school. Returns the
/// number of associations that break it.
pub async fn invariant_violations(client: &Client, schema: &str) -> anyhow::Result<u64> {
    let sql = format!(
        "SELECT count(*) FROM {s}.\"StudentSchoolAssociation\" a WHERE NOT EXISTS (
             SELECT 1 FROM {s}.\"StudentSectionAssociation\" x
             WHERE x.\"StudentUSI\" = a.\"StudentUSI\" AND x.\"SchoolId\" = a.\"SchoolId\")",
        s = q(schema)
    );
    let n: i64 = client.query_one(&sql, &[]).await?.get(0);
    Ok(n as u64)
}
